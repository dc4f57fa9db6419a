"""The Twilio side of the SMS channel: the official client on aiohttp, errors classified.

Imported by :class:`~hub.channels.sms.SmsChannel` when it starts, so nothing
loads twilio or aiohttp before a Twilio account is configured. One call per
:func:`create_message`, classified at this edge:

* HTTP 429 (Twilio 20429) and 503: :class:`TransientError` carrying ``Retry-After``;
* other 5xx (Twilio 20500): :class:`OutcomeUnknown`, Twilio may have queued the message;
* 401 (20003), 21211 invalid To, 21608 unverified, 21614 not mobile, any other 4xx:
  :class:`PermanentError`; 21610 (the recipient replied STOP) also sets ``opt_out``;
* no connection (refused, DNS, connect timeout): :class:`TransientError`;
* the request went out but no answer came (timeout, reset): :class:`OutcomeUnknown`.

:class:`~twilio.base.exceptions.TwilioRestException` carries no headers and
aiohttp's errors do not say whether the request reached the wire, so a small
subclass of Twilio's HTTP client records both for the task that made the call.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from hub.channels.http import parse_retry_after
from hub.channels.sms import CHANNEL, OPTED_OUT, REJECTIONS, SmsSettings
from hub.errors import ChannelError, OutcomeUnknown, PermanentError, TransientError


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
        reason = REJECTIONS.get(code or 0, f"rejected (HTTP {status})")
    return PermanentError(
        f"{reason}: {text}",
        channel=CHANNEL,
        provider_code=provider_code,
        opt_out=code == OPTED_OUT,
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


class TwilioSender:
    """One Twilio client and its HTTP session, shared by a worker process's sends."""

    def __init__(self, settings: SmsSettings) -> None:
        self.settings = settings
        self._http = _RecordingHttpClient(settings.timeout_s)
        self._client = Client(
            settings.account_sid, settings.auth_token.get_secret_value(), http_client=self._http
        )
        # Settings are the one source: ignore TWILIO_EDGE / TWILIO_REGION from the environment.
        self._client.edge = self._client.region = None
        if settings.api_base:
            self._client.api.base_url = settings.api_base.rstrip("/")

    async def close(self) -> None:
        await self._http.close()

    async def create_message(self, to: str, body: str) -> str:
        """Ask Twilio to send ``body`` to ``to``; the message sid, or a classified error."""
        s = self.settings
        fields: dict[str, Any] = {"to": to, "body": body}
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
