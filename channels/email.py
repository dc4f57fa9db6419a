"""Email over SMTP with aiosmtplib, through a small pool of reused connections.

SMTP replies are classified at this edge: 4xx and connection trouble are
transient, 5xx permanent. With no SMTP host configured, messages are written
as ``.eml`` files to the outbox instead.
"""

from __future__ import annotations

import asyncio
import binascii
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import ClassVar

import aiosmtplib

from hub.channels.base import Channel, Message, Outbox, Receipt
from hub.errors import PermanentError, TransientError
from hub.settings import EmailSettings

CHANNEL = "email"


@dataclass(frozen=True, slots=True)
class Email:
    """A message ready for the wire: its sender, Message-ID and RFC 5322 bytes (CRLF)."""

    sender: str
    message_id: str
    data: bytes


def build_email(message: Message, from_address: str) -> Email:
    """A text (+HTML alternative) email with a Message-ID derived from the notification.

    Written directly rather than through :mod:`email.message`, whose header
    objects cost milliseconds per message, the largest share of a send.
    """
    name, sender = parseaddr(from_address)
    domain = sender.rpartition("@")[2] or "hub.local"
    # The same on every attempt, so a receiver can drop a retry's duplicate.
    message_id = f"<{message.notification_id}@{domain}>"
    headers = [
        f"From: {formataddr((name, sender))}",
        f"To: {message.recipient}",
        f"Subject: {_header(message.subject or '')}",
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {message_id}",
        f"X-Hub-Event: {message.event_type} {message.event_id}",
        "MIME-Version: 1.0",
    ]
    if message.html:
        boundary = f"==hub-{message.notification_id}=="
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = b"".join(
            (
                f"--{boundary}\r\n".encode(),
                _part("plain", message.text),
                f"\r\n--{boundary}\r\n".encode(),
                _part("html", message.html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
    else:
        headers.append(_PART_HEADERS["plain"])
        body = _encode(message.text)
    return Email(sender, message_id, "\r\n".join(headers).encode() + b"\r\n\r\n" + body)


_PART_HEADERS = {
    subtype: (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable"
    )
    for subtype in ("plain", "html")
}


def _part(subtype: str, content: str) -> bytes:
    return _PART_HEADERS[subtype].encode() + b"\r\n\r\n" + _encode(content)


def _encode(content: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends (safe for any SMTP server)."""
    encoded = binascii.b2a_qp(content.replace("\r\n", "\n").encode(), istext=True)
    return encoded.replace(b"\n", b"\r\n")


def _header(value: str) -> str:
    """A header value, RFC 2047-encoded when it is not plain ASCII."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def classify(exc: Exception) -> TransientError | PermanentError:
    """Translate an aiosmtplib failure into the hub's transient/permanent errors."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error_class = PermanentError if exc.code >= 500 else TransientError
        return error_class(exc.message, channel=CHANNEL, provider_code=exc.code)
    return TransientError(f"{type(exc).__name__}: {exc}", channel=CHANNEL)


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

    async def send(self, email: Email, recipient: str) -> None:
        """Send over a pooled connection, opening or recycling it as needed."""
        connection = await self._idle.get()
        try:
            connection = await self._ready(connection)
            await connection.client.sendmail(email.sender, [recipient], email.data)
            connection.sent += 1
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
            # 421 means the server is closing the connection; any other reply
            # leaves it usable once the transaction is reset.
            if getattr(exc, "code", None) == 421:
                connection = await self._drop(connection)
            else:
                connection = await self._reset(connection)
            raise classify(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            connection = await self._drop(connection)
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
            connection = await self._drop(connection)
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
            return await self._drop(connection)
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


class EmailChannel(Channel):
    """Email, one recipient per message."""

    name: ClassVar[str] = CHANNEL
    parts: ClassVar[tuple[str, ...]] = ("subject.txt", "body.txt")

    def __init__(self, settings: EmailSettings, outbox_dir: Path) -> None:
        self.settings = settings
        self.outbox = Outbox(outbox_dir)
        self.pool = SmtpPool(settings) if settings.host else None
        self.concurrency = settings.pool_size

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def send(self, message: Message) -> Receipt:
        email = build_email(message, self.settings.from_address)
        message_id = email.message_id
        if self.pool is None:
            path = await self.outbox.write(message, email.data, "eml")
            return Receipt(message_id, {"outbox": str(path)})
        await self.pool.send(email, message.recipient)
        return Receipt(message_id)
