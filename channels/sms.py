"""SMS through Twilio's Messages API (the client lives in :mod:`hub.channels.twilio_api`).

Recipients are normalised to E.164 with ``phonenumbers``; bodies are measured in
GSM-7 septets or UCS-2 units (:func:`count_segments`) and refused or truncated
above ``max_segments``. With no ``account_sid``, messages are written as text
files to the outbox instead. Twilio's delivery reports arrive at
``/v1/callbacks/sms/<provider>`` and are read by :meth:`SmsChannel.status_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl

import phonenumbers
from pydantic import Field, SecretStr

from hub.channels.base import Callback, Channel, Message, Receipt, StatusReport
from hub.errors import ConfigError, InvalidSignature, PermanentError
from hub.settings import ChannelSettings

if TYPE_CHECKING:
    from hub.channels.twilio_api import TwilioSender

CHANNEL = "sms"

Encoding = Literal["GSM-7", "UCS-2"]


class SmsSettings(ChannelSettings):
    """Twilio SMS. No ``account_sid``: messages go to ``var/outbox/sms/``."""

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    messaging_service_sid: str = ""
    api_base: str = Field("", description="Empty: Twilio's own; tests point it at a local fake")
    status_callback_url: str = Field("", description="Public URL of POST /v1/callbacks/sms/...")
    default_region: str = Field("US", description="Region for numbers given without +country")
    max_segments: int = Field(3, ge=1, le=10)
    over_limit: Literal["refuse", "truncate"] = "refuse"
    timeout_s: float = Field(10.0, gt=0)


# GSM 03.38: the basic table (one septet each; ESC itself left out) and the
# extension table (ESC + char, two septets each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# Units per message: (alone in one segment, per part of a concatenated message).
SEGMENT_LIMITS: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}

# Twilio error codes that need a word of explanation; every other 4xx is a plain rejection.
REJECTIONS = {
    21211: "invalid 'To' number",
    21608: "the number is unverified (trial accounts only reach verified numbers)",
    21610: "the recipient has opted out (replied STOP)",
    21614: "the 'To' number is not a mobile number",
}
OPTED_OUT = 21610
# Twilio's final MessageStatus values; queued, sent, ... are progress, not outcomes.
FINAL_STATUSES: dict[str, Literal["delivered", "undelivered"]] = {
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "undelivered",
}


@dataclass(frozen=True, slots=True)
class Segments:
    """How a body travels as SMS: its encoding, length in that encoding's units, and parts."""

    encoding: Encoding
    units: int  # GSM-7 septets, or UTF-16 code units for UCS-2
    segments: int


def count_segments(text: str) -> Segments:
    """Measure ``text`` as an SMS: GSM-7 when every character is in the GSM tables, else UCS-2.

    One segment holds 160 septets (GSM-7) or 70 UTF-16 units (UCS-2); a longer
    message is sent in parts of 153 or 67, and a two-unit character (a GSM
    extension character, a UCS-2 surrogate pair) is never split across parts.
    """
    encoding, costs = _unit_costs(text)
    units = sum(costs)
    single, part = SEGMENT_LIMITS[encoding]
    if units <= single:
        return Segments(encoding, units, 1)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return Segments(encoding, units, segments)


def _unit_costs(text: str) -> tuple[Encoding, list[int]]:
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        return "GSM-7", [2 if char in GSM7_EXTENSION else 1 for char in text]
    return "UCS-2", [2 if ord(char) > 0xFFFF else 1 for char in text]


def truncate_to_segments(text: str, max_segments: int) -> str:
    """``text`` cut to fit ``max_segments``, ending with "..." (GSM-7) or "…" (UCS-2).

    Unchanged when it already fits. The ellipsis follows the encoding of what
    is kept: cutting away the only non-GSM characters leaves a GSM-7 message.
    """
    if count_segments(text).segments <= max_segments:
        return text

    def shortened(length: int) -> str:
        head = text[:length].rstrip()
        return head + ("..." if count_segments(head).encoding == "GSM-7" else "…")

    # Binary search for the longest prefix that fits; the empty one always does.
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if count_segments(shortened(middle)).segments <= max_segments:
            fits = middle
        else:
            too_long = middle
    return shortened(fits)


def to_e164(number: str, default_region: str) -> str:
    """``number`` in E.164 (``+14155552671``); national numbers are read in ``default_region``.

    Raises :class:`PermanentError` for anything that is not a valid phone number.
    """
    region = default_region.upper()
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise PermanentError(f"{number!r} is not a phone number: {exc}", channel=CHANNEL) from exc
    if not phonenumbers.is_valid_number(parsed):
        how = "" if number.lstrip().startswith("+") else f" (read as a {region} number)"
        raise PermanentError(f"{number!r} is not a valid phone number{how}", channel=CHANNEL)
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


class SmsChannel(Channel[SmsSettings]):
    """SMS through Twilio, one recipient (a phone number) per message."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "sms"
    settings_model: ClassVar[type[ChannelSettings]] = SmsSettings
    variant: ClassVar[str] = "sms"
    callbacks: ClassVar[bool] = True

    def __init__(self, settings: SmsSettings, outbox_dir: Path) -> None:
        _check(settings)
        super().__init__(settings, outbox_dir)
        self._sender: TwilioSender | None = None

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(settings.account_sid)

    @classmethod
    def address(cls, settings: Any, recipient: str) -> str:
        """The number in E.164 (:func:`to_e164`): a bad one fails before any provider is asked."""
        return to_e164(recipient, settings.default_region)

    @classmethod
    def describe(cls, text: str) -> dict[str, str | int]:
        counted = count_segments(text)
        return {
            "encoding": counted.encoding,
            "units": counted.units,
            "segments": counted.segments,
        }

    @classmethod
    def status_report(cls, settings: Any, callback: Callback) -> StatusReport | None:
        """Twilio's delivery report, authenticated by ``X-Twilio-Signature``.

        The signature covers the URL Twilio was given (``status_callback_url``,
        else the URL the request came to) and the form fields.
        """
        from twilio.request_validator import RequestValidator

        try:
            form = dict(parse_qsl(callback.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidSignature("the body is not UTF-8 form data", "malformed") from None
        token = settings.auth_token.get_secret_value()
        url = settings.status_callback_url or callback.url
        signature = callback.headers.get("X-Twilio-Signature", "")
        if not token or not RequestValidator(token).validate(url, form, signature):
            raise InvalidSignature("invalid X-Twilio-Signature", "mismatch")
        status = FINAL_STATUSES.get(form.get("MessageStatus", ""))
        if status is None:
            return None
        code = form.get("ErrorCode", "")
        return StatusReport(
            provider_message_id=form.get("MessageSid", ""),
            status=status,
            error=f"twilio error {code}" if code else None,
            opt_out=code == str(OPTED_OUT),
        )

    async def _start(self) -> None:
        from hub.channels.twilio_api import TwilioSender

        self._sender = TwilioSender(self.settings)

    async def _close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
            self._sender = None

    def _prepare(self, message: Message) -> tuple[str, str, Segments, dict[str, str]]:
        to = to_e164(message.recipient, self.settings.default_region)
        body = self._fit(message.text)
        segments = count_segments(body)
        details = {"to": to, "encoding": segments.encoding}
        if body != message.text:
            details["truncated"] = "true"
        return to, body, segments, details

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        to, body, segments, details = self._prepare(message)
        sender = self.settings.messaging_service_sid or self.settings.from_number
        head = f"To: {to}\nFrom: {sender}\nSegments: {segments.segments}\n"
        content = f"{head}Encoding: {segments.encoding}\n\n{body}".encode()
        return content, Receipt(f"outbox-{message.notification_id}", details, segments.segments)

    async def _send(self, message: Message) -> Receipt:
        to, body, segments, details = self._prepare(message)
        assert self._sender is not None, "started by send()"
        sid = await self._sender.create_message(to, body)
        return Receipt(sid, details, segments.segments)

    def _fit(self, text: str) -> str:
        limit = self.settings.max_segments
        counted = count_segments(text)
        if counted.segments <= limit:
            return text
        if self.settings.over_limit == "truncate":
            return truncate_to_segments(text, limit)
        raise PermanentError(
            f"the body needs {counted.segments} segments ({counted.units} {counted.encoding} "
            f"units), more than channels.sms.max_segments = {limit}",
            channel=CHANNEL,
        )


def _check(settings: SmsSettings) -> None:
    """Fail at start-up, naming the key, rather than at the first send."""
    if settings.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"channels.sms.default_region: unknown region {settings.default_region!r}"
        )
    if not settings.account_sid:
        return
    if not settings.auth_token.get_secret_value():
        raise ConfigError("channels.sms.auth_token is empty but channels.sms.account_sid is set")
    if not (settings.from_number or settings.messaging_service_sid):
        raise ConfigError(
            "channels.sms: set from_number or messaging_service_sid to send with Twilio"
        )
