"""SMS over Twilio's Messages API, with the official ``twilio`` client on aiohttp.

One attempt per :meth:`SmsChannel.send`, classified at this edge:

* HTTP 429 (Twilio 20429) and 503: :class:`TransientError` carrying ``Retry-After``;
* other 5xx (Twilio 20500): :class:`OutcomeUnknown`, Twilio may have queued the message;
* 401 (20003), 21211 invalid To, 21608 unverified, 21614 not mobile, any other 4xx:
  :class:`PermanentError`; 21610 (the recipient replied STOP) also sets ``opt_out``;
* no connection (refused, DNS, connect timeout): :class:`TransientError`;
* the request went out but no answer came (timeout, reset): :class:`OutcomeUnknown`.

:class:`~twilio.base.exceptions.TwilioRestException` carries no headers and
aiohttp's errors do not say whether the request reached the wire, so a small
subclass of Twilio's HTTP client records both for the task that made the call.

Recipients are normalised to E.164 with ``phonenumbers``; bodies are measured in
GSM-7 septets or UCS-2 units (:func:`count_segments`) and refused or truncated
above ``max_segments``. With no ``account_sid``, messages are written as text
files to the outbox instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import aiohttp
import phonenumbers
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from hub.channels.base import Channel, Message, Outbox, Receipt
from hub.channels.http import parse_retry_after
from hub.errors import ChannelError, ConfigError, OutcomeUnknown, PermanentError, TransientError
from hub.settings import SmsSettings

CHANNEL = "sms"

Encoding = Literal["GSM-7", "UCS-2"]

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
_REJECTIONS = {
    21211: "invalid 'To' number",
    21608: "the number is unverified (trial accounts only reach verified numbers)",
    21610: "the recipient has opted out (replied STOP)",
    21614: "the 'To' number is not a mobile number",
}
_OPTED_OUT = 21610


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


def classify_twilio_error(
    exc: TwilioRestException | TwilioServiceException, headers: Mapping[str, str]
) -> ChannelError:
    """Translate Twilio's error answer: HTTP status first, then a short list of Twilio codes."""
    status, code = int(exc.status), exc.code
    provider_code = code or status
    text = str(exc.msg if isinstance(exc, TwilioRestException) else exc.detail or exc.title)
    text = text.removeprefix("Unable to create record: ")
    if status in (429, 503) or code == 20429:
        retry_after_s = parse_retry_after(headers.get("Retry-After"))
        return TransientError(
            f"Twilio is busy (HTTP {status}): {text}",
            channel=CHANNEL,
            provider_code=provider_code,
            retry_after_s=retry_after_s,
        )
    if status >= 500 or code == 20500:
        return OutcomeUnknown(
            f"Twilio failed (HTTP {status}) and may have queued the message: {text}",
            channel=CHANNEL,
            provider_code=provider_code,
        )
    if status == 401 or code == 20003:
        reason = "authentication failed: check channels.sms.account_sid and auth_token"
    else:
        reason = _REJECTIONS.get(code or 0, f"rejected (HTTP {status})")
    return PermanentError(
        f"{reason}: {text}",
        channel=CHANNEL,
        provider_code=provider_code,
        opt_out=code == _OPTED_OUT,
    )


def classify_network_error(exc: BaseException, *, sent: bool) -> TransientError | OutcomeUnknown:
    """No HTTP answer: safe to retry only if the request never went out."""
    what = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if sent:
        return OutcomeUnknown(
            f"no answer after the request was sent, Twilio may have queued it ({what})",
            channel=CHANNEL,
        )
    return TransientError(f"could not reach Twilio ({what})", channel=CHANNEL)


@dataclass
class _Exchange:
    """What the HTTP layer saw of one send: did the request go out, which headers came back."""

    sent: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


# Set by SmsChannel.send for the task making the call; read by the HTTP client
# below. A context variable keeps concurrent sends on one client apart.
_exchange: ContextVar[_Exchange | None] = ContextVar("hub_sms_exchange", default=None)


async def _note_request_sent(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
) -> None:
    if (exchange := _exchange.get()) is not None:
        exchange.sent = True


class _RecordingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """Twilio's aiohttp client, recording each call into the caller's :class:`_Exchange`."""

    def __init__(self, timeout_s: float) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_note_request_sent)
        super().__init__(timeout=timeout_s, trace_configs=[trace])

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            # Sent as a header: aiohttp 3.14 deprecates the BasicAuth the parent builds.
            credentials = base64.b64encode(":".join(auth).encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        # The parent hands aiohttp its caller's timeout (None: wait forever), not
        # the one given at construction.
        response: Response = await super().request(
            method, url, params, data, headers, None, timeout or self.timeout, allow_redirects
        )
        if (exchange := _exchange.get()) is not None:
            exchange.headers = response.headers or {}
        return response


class SmsChannel(Channel):
    """SMS through Twilio, one recipient (a phone number) per message."""

    name: ClassVar[str] = CHANNEL
    parts: ClassVar[tuple[str, ...]] = ("body.txt",)

    @classmethod
    def describe(cls, text: str) -> dict[str, str | int]:
        counted = count_segments(text)
        return {
            "encoding": counted.encoding,
            "units": counted.units,
            "segments": counted.segments,
        }

    def __init__(self, settings: SmsSettings, outbox_dir: Path) -> None:
        _check(settings)
        self.settings = settings
        self.outbox = Outbox(outbox_dir)
        self._http: _RecordingHttpClient | None = None
        self._client: Client | None = None

    async def start(self) -> None:
        """Create the Twilio client and its HTTP session (nothing to do in outbox mode)."""
        s = self.settings
        if self._client is not None or not s.account_sid:
            return
        http = _RecordingHttpClient(s.timeout_s)
        client = Client(s.account_sid, s.auth_token.get_secret_value(), http_client=http)
        # Settings are the one source: ignore TWILIO_EDGE / TWILIO_REGION from the environment.
        client.edge = client.region = None
        if s.api_base:
            client.api.base_url = s.api_base.rstrip("/")
        self._http, self._client = http, client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = self._client = None

    async def send(self, message: Message) -> Receipt:
        to = to_e164(message.recipient, self.settings.default_region)
        body = self._fit(message.text)
        segments = count_segments(body)
        details = {"to": to, "encoding": segments.encoding}
        if body != message.text:
            details["truncated"] = "true"
        if not self.settings.account_sid:
            path = await self.outbox.write(message, self._outbox_text(to, body, segments), "txt")
            details["outbox"] = str(path)
            return Receipt(f"outbox-{message.notification_id}", details, segments.segments)
        sid = await self._create(to, body)
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

    async def _create(self, to: str, body: str) -> str:
        await self.start()
        assert self._client is not None
        s = self.settings
        fields: dict[str, str] = {"to": to, "body": body}
        if s.messaging_service_sid:
            fields["messaging_service_sid"] = s.messaging_service_sid
        else:
            fields["from_"] = s.from_number
        if s.status_callback_url:
            fields["status_callback"] = s.status_callback_url
        exchange = _Exchange()
        token = _exchange.set(exchange)
        try:
            created = await self._client.messages.create_async(**fields)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify_twilio_error(exc, exchange.headers) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise classify_network_error(exc, sent=exchange.sent) from exc
        except json.JSONDecodeError as exc:
            raise OutcomeUnknown(
                "Twilio accepted the request with a non-JSON answer", channel=CHANNEL
            ) from exc
        finally:
            _exchange.reset(token)
        if not created.sid:
            raise OutcomeUnknown(
                "Twilio accepted the request without a message sid", channel=CHANNEL
            )
        return str(created.sid)

    def _outbox_text(self, to: str, body: str, segments: Segments) -> bytes:
        sender = self.settings.messaging_service_sid or self.settings.from_number
        head = f"To: {to}\nFrom: {sender}\nSegments: {segments.segments}\n"
        return f"{head}Encoding: {segments.encoding}\n\n{body}".encode()


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
