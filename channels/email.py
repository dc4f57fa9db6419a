"""Email over SMTP, through a small pool of reused connections (:mod:`hub.channels.smtp`).

SMTP replies are classified at that edge: 4xx and connection trouble are
transient, 5xx permanent. With no SMTP host configured, messages are written
as ``.eml`` files to the outbox instead.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr

from hub.channels.base import Channel, Message, Receipt
from hub.settings import ChannelSettings

if TYPE_CHECKING:
    from hub.channels.smtp import SmtpPool

CHANNEL = "email"


class EmailSettings(ChannelSettings):
    """SMTP delivery. An empty ``host`` writes ``.eml`` files to ``var/outbox/email/``."""

    host: str = ""
    port: int = Field(25, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = False
    use_tls: bool = False
    timeout_s: float = Field(10.0, gt=0)
    from_address: str = "Hub <hub@localhost>"
    pool_size: int = Field(2, ge=1, le=64)
    recycle_after: int = Field(100, ge=1)
    # Mail servers keep a message for days; a day of retries rides out any outage.
    retry_window: str = "24h"


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


class EmailChannel(Channel[EmailSettings]):
    """Email, one recipient per message."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "email"
    settings_model: ClassVar[type[ChannelSettings]] = EmailSettings
    parts: ClassVar[tuple[str, ...]] = ("subject.txt", "body.txt")
    outbox_suffix: ClassVar[str] = "eml"

    def __init__(self, settings: EmailSettings, outbox_dir: Path) -> None:
        super().__init__(settings, outbox_dir)
        self.concurrency = settings.pool_size
        self.pool: SmtpPool | None = None

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(settings.host)

    async def _start(self) -> None:
        from hub.channels.smtp import SmtpPool

        self.pool = SmtpPool(self.settings)

    async def _close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        email = build_email(message, self.settings.from_address)
        return email.data, Receipt(email.message_id)

    async def _send(self, message: Message) -> Receipt:
        assert self.pool is not None, "started by send()"
        email = build_email(message, self.settings.from_address)
        await self.pool.send(email, message.recipient)
        return Receipt(email.message_id)
