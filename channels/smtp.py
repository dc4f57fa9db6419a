"""SMTP over aiosmtplib: a small pool of reused connections, failures classified.

SMTP replies are classified at this edge: 4xx and connection trouble are
transient, 5xx permanent. Imported by the email channel when it starts, so
nothing loads aiosmtplib before an SMTP host is configured.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiosmtplib

from hub.channels.email import CHANNEL, Email, EmailSettings
from hub.errors import PermanentError, TransientError


def classify(exc: Exception) -> TransientError | PermanentError:
    """Translate an aiosmtplib failure into the hub's transient/permanent errors."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error_class = PermanentError if exc.code >= 500 else TransientError
        return error_class(exc.message, channel=CHANNEL, provider_code=exc.code)
    return TransientError(f"{type(exc).__name__}: {exc}", channel=CHANNEL)


async def _require_smtputf8(client: aiosmtplib.SMTP, recipient: str) -> None:
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if not client.supports_extension("smtputf8"):
        raise PermanentError(
            f"invalid_address: {recipient!r} has a UTF-8 mailbox name, and the SMTP server "
            "does not offer SMTPUTF8",
            channel=CHANNEL,
        )


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    sent: int = 0


class SmtpPool:
    """Up to ``pool_size`` SMTP connections, each reused for ``recycle_after`` messages."""

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(settings.pool_size):
            self._idle.put_nowait(None)

    async def send(self, email: Email, recipient: str, smtputf8: bool = False) -> None:
        """Send over a pooled connection, opening or recycling it as needed.

        ``smtputf8``: the recipient's mailbox name is UTF-8, which only a
        server offering SMTPUTF8 takes; otherwise a PermanentError, and the
        connection stays in the pool.
        """
        connection = await self._idle.get()
        try:
            connection = await self._ready(connection)
            options = []
            if smtputf8:
                await _require_smtputf8(connection.client, recipient)
                options.append("SMTPUTF8")
            await connection.client.sendmail(
                email.sender, [recipient], email.data, mail_options=options
            )
            connection.sent += 1
        except PermanentError:
            raise  # refused before the transaction began: the connection is fine
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
            # 421 means the server is closing the connection; any other reply
            # leaves it usable once the transaction is reset.
            if getattr(exc, "code", None) == 421:
                await self._drop(connection)
                connection = None
            else:
                connection = await self._reset(connection)
            raise classify(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop(connection)
            connection = None
            raise classify(exc) from exc
        except BaseException:
            # Cancelled mid-conversation (the attempt timed out): the server's
            # late reply would answer the next command, so never reuse it.
            if connection is not None:
                connection.client.close()
            connection = None
            raise
        finally:
            self._idle.put_nowait(connection)

    async def _ready(self, connection: _Connection | None) -> _Connection:
        if connection is not None and (
            connection.sent >= self.settings.recycle_after or not connection.client.is_connected
        ):
            await self._drop(connection)
            connection = None
        if connection is None:
            connection = _Connection(await self._connect())
        return connection

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.use_tls,
            start_tls=s.starttls,
            timeout=s.timeout_s,
            username=s.username or None,
            password=s.password.get_secret_value() or None,
        )
        await client.connect()
        return client

    async def _reset(self, connection: _Connection | None) -> _Connection | None:
        # A refused recipient leaves the transaction open: RSET or reconnect.
        if connection is None:
            return None
        try:
            await connection.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self._drop(connection)
            return None
        return connection

    async def _drop(self, connection: _Connection | None) -> None:
        if connection is not None:
            try:
                await connection.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                connection.client.close()
        return None

    async def close(self) -> None:
        while not self._idle.empty():
            await self._drop(self._idle.get_nowait())
