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

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import ClassVar

import httpx

from hub import __version__
from hub.channels.base import Channel, Outbox
from hub.errors import ConfigError, PermanentError, TransientError

USER_AGENT = f"hub/{__version__}"
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
    # X-Hub-Delivery id, and for an alert a rare duplicate (Slack does not
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


class HttpChannel(Channel):
    """A channel that POSTs to one configured URL over a client shared for the process.

    An empty URL means outbox mode: nothing is opened and subclasses write
    what they would have sent to ``self.outbox``.
    """

    url_key: ClassVar[str]  # the settings key of the URL, for start-up errors

    def __init__(self, url: str, timeout_s: float, outbox_dir: Path) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.outbox = Outbox(outbox_dir)
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self.url:
            check_url(self.url, self.url_key)
            self.client = new_client(self.timeout_s)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def post_body(self, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """One POST of ``content`` to the URL, failures classified."""
        if self.client is None:
            raise RuntimeError(f"{type(self).__name__}.send() before start()")
        return await post(self.client, self.name, self.url, content, headers)
