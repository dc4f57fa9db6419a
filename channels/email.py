"""Email over SMTP, through a small pool of reused connections (:mod:`hub.channels.smtp`).

SMTP replies are classified at that edge: 4xx and connection trouble are
transient, 5xx permanent. With no SMTP host configured, messages are written
as ``.eml`` files to the outbox instead.

Each message goes to one address, checked by :func:`hub.addresses.email_address`
before any network call; a UTF-8 mailbox name goes only to a server offering
SMTPUTF8. The message itself is written by hand (:func:`build_email`), and
keeps what the standard library's email policy enforces: no CR or LF in a
header value (refused), lines folded to 78 characters (RFC 5322), non-ASCII
text in RFC 2047 encoded words.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, replace
from email import policy
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from hub.addresses import EmailAddress, email_address
from hub.channels.base import Channel, Message, Receipt
from hub.errors import PermanentError
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

    @field_validator("from_address")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # Written into the From header of every message: fail at start-up instead.
        if _CONTROL.search(value):
            raise ValueError("must not contain CR, LF or other control characters")
        if not parseaddr(value)[1]:
            raise ValueError(f"{value!r} holds no email address")
        return value


@dataclass(frozen=True, slots=True)
class Email:
    """A message ready for the wire: its sender, Message-ID and RFC 5322 bytes (CRLF)."""

    sender: str
    message_id: str
    data: bytes


def build_email(message: Message, from_address: str) -> Email:
    """A text (+HTML alternative) email with a Message-ID derived from the notification.

    Written directly rather than through :mod:`email.message`, whose header
    objects cost more than the rest of a send, but to the same rules: a header
    value holding CR or LF (whatever its source) raises :class:`PermanentError`
    (``invalid_header``), and values are folded and encoded by
    :func:`_header`. ``message.recipient`` must be a checked address.
    """
    sender, from_header, domain = _sender(from_address)
    if _CONTROL.search(message.recipient):
        raise _unsafe("To", message.recipient)
    # The same on every attempt, so a receiver can drop a retry's duplicate.
    message_id = f"<{message.notification_id}@{domain}>"
    try:
        headers = [
            from_header,
            _unbreakable("To", message.recipient),
            _header("Subject", message.subject or ""),
            f"Date: {formatdate(localtime=False, usegmt=True)}",
            _unbreakable("Message-ID", message_id),
            _header("X-Hub-Event", f"{message.event_type} {message.event_id}"),
            "MIME-Version: 1.0",
        ]
        if message.unsubscribe_url:
            headers += _unsubscribe(message.unsubscribe_url)
        if message.html:
            boundary = f"==hub-{message.notification_id}=="
            headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
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
        data = "\r\n".join(headers).encode() + b"\r\n\r\n" + body
    except UnicodeEncodeError as exc:
        # A lone surrogate from event data: no retry can encode it.
        why = f"invalid_text: the message is not valid Unicode: {exc}"
        raise PermanentError(why, channel=CHANNEL) from None
    return Email(sender, message_id, data)


_PART_HEADERS = {
    subtype: (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable"
    )
    for subtype in ("plain", "html")
}

# RFC 5322 2.1.1: a line SHOULD be at most 78 characters; RFC 2047 2: an
# encoded word at most 75.
MAX_LINE = 78
_MAX_WORD = 75
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_BREAK = re.compile(r"[\r\n]")
# Written as is only when printable ASCII (tabs too) that no reader would take
# for an encoded word; anything else is encoded.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\t]|=\?")


def _header(name: str, value: str) -> str:
    """The header ``name: value`` with an unstructured value (a subject), safe to send.

    Printable ASCII is folded before spaces into lines of at most 78
    characters. Anything else (non-ASCII, control characters, a word too long
    for a line, text that would read as an encoded word) is written as RFC 2047
    encoded words, folded the same way. CR or LF raises :class:`PermanentError`
    (``invalid_header``): a line break there would start a header of its own.
    """
    line = f"{name}: {value}"
    plain = _NOT_PLAIN.search(value) is None
    if plain and len(line) <= MAX_LINE:
        return line  # the common case, at the cost of one regex search
    if _LINE_BREAK.search(value):
        raise _unsafe(name, value)
    if plain and (folded := _fold(line, len(name) + 2)) is not None:
        return folded
    return f"{name}: " + "\r\n ".join(_encoded_words(value, MAX_LINE - len(name) - 2))


def _unsubscribe(url: str) -> list[str]:
    """One-click unsubscribe headers (RFC 8058): the link, and that a POST to it suffices."""
    if _CONTROL.search(url):
        raise _unsafe("List-Unsubscribe", url)
    return [
        _unbreakable("List-Unsubscribe", f"<{url}>"),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]


def _unbreakable(name: str, value: str) -> str:
    """A header whose value cannot be folded (an address, a Message-ID): own line if long."""
    line = f"{name}: {value}"
    return line if len(line) <= MAX_LINE else f"{name}:\r\n {value}"


def _fold(line: str, start: int) -> str | None:
    """``line`` folded before spaces into lines of at most 78 characters; None if it cannot be.

    Each fold keeps its space as the next line's leading white space, so
    unfolding gives back ``line``. ``start`` is where the value begins: no fold
    before it.
    """
    lines = []
    begin, earliest = 0, start
    while len(line) - begin > MAX_LINE:
        cut = line.rfind(" ", earliest, begin + MAX_LINE + 1)
        # No space, or only white space before it: a word too long for a line.
        if cut == -1 or not line[begin:cut].strip():
            return None
        lines.append(line[begin:cut])
        begin, earliest = cut, cut + 1
    lines.append(line[begin:])
    return "\r\n".join(lines)


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as base64 encoded words of whole characters, the first within ``first_room``.

    Readers drop the white space between adjacent encoded words, so the
    words join back into ``text`` exactly.
    """
    data = text.encode()
    words = []
    # Twelve characters of each word are "=?utf-8?b?" and "?="; 4 base64 per 3 bytes.
    size = (min(first_room, _MAX_WORD) - 12) // 4 * 3
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # never split a character's UTF-8 bytes
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start, size = end, (_MAX_WORD - 12) // 4 * 3
    return words


@lru_cache(maxsize=16)
def _sender(from_address: str) -> tuple[str, str, str]:
    """``(envelope sender, From header, Message-ID domain)``, once per ``from_address``."""
    if _CONTROL.search(from_address):
        raise _unsafe("From", from_address)
    name, sender = parseaddr(from_address)
    domain = sender.rpartition("@")[2] or "hub.local"
    # Once per process, so the standard library's folding of a display name
    # (encoded words only where needed, as readers of phrases expect) is free.
    line = policy.SMTP.fold("From", formataddr((name, sender))).removesuffix("\r\n")
    return sender, line, domain


def _unsafe(name: str, value: str) -> PermanentError:
    shown = repr(value) if len(value) <= 80 else f"{value[:80]!r}..."
    why = f"invalid_header: a line break or control character in the {name} header: {shown}"
    return PermanentError(why, channel=CHANNEL)


def _part(subtype: str, content: str) -> bytes:
    return _PART_HEADERS[subtype].encode() + b"\r\n\r\n" + _encode(content)


def _encode(content: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends (safe for any SMTP server)."""
    encoded = binascii.b2a_qp(content.replace("\r\n", "\n").encode(), istext=True)
    return encoded.replace(b"\n", b"\r\n")


def _checked(recipient: str, code: str = "") -> EmailAddress:
    try:
        return email_address(recipient)
    except ValueError as exc:
        raise PermanentError(f"{code}{exc}", channel=CHANNEL) from None


class EmailChannel(Channel[EmailSettings]):
    """Email, one recipient per message."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "email"
    settings_model: ClassVar[type[ChannelSettings]] = EmailSettings
    variant: ClassVar[str] = "email"
    outbox_suffix: ClassVar[str] = "eml"

    def __init__(self, settings: EmailSettings, outbox_dir: Path) -> None:
        super().__init__(settings, outbox_dir)
        self.concurrency = settings.pool_size
        self.pool: SmtpPool | None = None

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(settings.host)

    @classmethod
    def address(cls, settings: Any, recipient: str) -> str:
        """One email address (:func:`hub.addresses.email_address`); IDN domains in ASCII."""
        return _checked(recipient).address

    async def _start(self) -> None:
        from hub.channels.smtp import SmtpPool

        self.pool = SmtpPool(self.settings)

    async def _close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        _, email = self._prepare(message)
        return email.data, Receipt(email.message_id)

    async def _send(self, message: Message) -> Receipt:
        assert self.pool is not None, "started by send()"
        to, email = self._prepare(message)
        await self.pool.send(email, to.address, smtputf8=to.smtputf8)
        return Receipt(email.message_id)

    def _prepare(self, message: Message) -> tuple[EmailAddress, Email]:
        """The checked recipient and the message's bytes, or PermanentError before any network call.

        Checked here too, not only by delivery: a channel may be called
        directly, or as another channel's failover provider.
        """
        to = _checked(message.recipient, "invalid_address: ")
        if to.address != message.recipient:
            message = replace(message, recipient=to.address)
        return to, build_email(message, self.settings.from_address)
