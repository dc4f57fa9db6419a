"""The shared edge of the HTTP channels (Slack, webhook): statuses and transport errors.

Every HTTP answer and every httpx exception is classified here, once:

====================================  ==========================================
2xx                                   accepted (``None``)
408, 429, 5xx                         :class:`TransientError` (``Retry-After`` kept)
3xx (redirects are not followed)      :class:`PermanentError`: fix the URL
other 4xx                             :class:`PermanentError`
connect error, timeout, broken reply  :class:`TransientError`
unsupported URL scheme                :class:`PermanentError`
====================================  ==========================================
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import Field

from hub import __version__
from hub.channels.base import Channel
from hub.errors import ConfigError, PermanentError, TransientError
from hub.settings import ChannelSettings

USER_AGENT = f"hub/{__version__}"


class HttpSettings(ChannelSettings):
    """What every HTTP channel can be told, besides its URL."""

    timeout_s: float = Field(10.0, gt=0)


HttpSettingsT = TypeVar("HttpSettingsT", bound=HttpSettings)
_SECONDS = re.compile(r"\d+(\.\d+)?")


def new_client(timeout_s: float) -> httpx.AsyncClient:
    """The one client a channel shares across its sends (opened in start(), closed in close())."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


def check_url(url: str, key: str) -> None:
    """Fail at start-up on a URL httpx cannot post to; ``key`` names the setting, not the URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{key}: not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{key}: must be an http:// or https:// URL with a host")


async def private_address(host: str) -> str | None:
    """The first private, loopback, link-local or otherwise non-public address of ``host``.

    Raises :class:`OSError` when the name does not resolve.
    """
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    return next((str(address) for address in addresses if not address.is_global), None)


async def check_target(url: str, key: str, channel: str, *, at_start: bool) -> None:
    """Refuse a URL whose host is not a public address (outbound.allow_private_targets off).

    At start-up a refusal is a :class:`ConfigError` and a name that does not
    resolve yet is let through; at a send they are a permanent and a
    transient failure. The client resolves the name again when it connects,
    so this narrows what a target can reach rather than pinning it.
    """
    host = httpx.URL(url).host
    try:
        private = await private_address(host)
    except OSError as exc:
        if at_start:
            return
        message = f"{key}: cannot resolve the target's host: {exc}"
        raise TransientError(message, channel=channel) from exc
    if private is None:
        return
    message = (
        f"{key}: the target resolves to the non-public address {private}; "
        "set outbound.allow_private_targets = true to allow it"
    )
    if at_start:
        raise ConfigError(message)
    raise PermanentError(message, channel=channel)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait per ``Retry-After`` (delay-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated offset
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_response(
    channel: str, response: httpx.Response
) -> TransientError | PermanentError | None:
    """None for a 2xx answer, else the hub error that says whether a retry can help."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    if said := response.text.strip()[:200]:
        reason = f"{reason}: {said}"
    if status in (408, 429) or status >= 500:
        retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(
            reason, channel=channel, provider_code=status, retry_after_s=retry_after_s
        )
    if 300 <= status < 400:
        reason = f"{reason} (redirects are not followed; configure the final URL)"
    return PermanentError(reason, channel=channel, provider_code=status)


def transport_error(channel: str, exc: httpx.TransportError) -> TransientError | PermanentError:
    """Translate an httpx transport failure (nothing or no full answer came back)."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return PermanentError(f"unsupported URL: {exc}", channel=channel)
    # A read timeout, a reset or a half-sent reply may come after the receiver
    # acted on the request, so in general the outcome is unknown. These
    # channels still call it transient: webhook receivers dedupe by the
    # signed body's notification_id, and for an alert a rare duplicate (Slack does not
    # dedupe) costs far less than an alert lost because nobody retried it.
    return TransientError(f"{type(exc).__name__}: {exc}".rstrip(": "), channel=channel)


async def post(
    client: httpx.AsyncClient,
    channel: str,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
) -> httpx.Response:
    """POST once and return the 2xx answer, or raise the classified hub error."""
    try:
        response = await client.post(url, content=content, headers=dict(headers))
    except httpx.TransportError as exc:
        raise transport_error(channel, exc) from exc
    if error := classify_response(channel, response):
        raise error
    return response


class HttpChannel(Channel[HttpSettingsT]):
    """A channel that POSTs to one configured URL over a client shared for the process.

    Without a URL the base writes what would have been sent to the outbox.
    """

    url_key: ClassVar[str]  # the settings key of the URL, for start-up errors
    outbox_suffix: ClassVar[str] = "json"

    def __init__(self, settings: HttpSettingsT, outbox_dir: Path) -> None:
        super().__init__(settings, outbox_dir)
        self.url = self.url_of(settings)
        self.client: httpx.AsyncClient | None = None

    @classmethod
    @abstractmethod
    def url_of(cls, settings: Any) -> str:
        """The URL to POST to; empty when the channel is not configured."""

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(cls.url_of(settings))

    async def _start(self) -> None:
        check_url(self.url, self.url_key)
        if not self.allow_private_targets:
            await check_target(self.url, self.url_key, self.name, at_start=True)
        self.client = new_client(self.settings.timeout_s)

    async def _close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def post_body(self, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """One POST of ``content`` to the URL, failures classified."""
        assert self.client is not None, "started by send()"
        if not self.allow_private_targets:
            await check_target(self.url, self.url_key, self.name, at_start=False)
        return await post(self.client, self.name, self.url, content, headers)
