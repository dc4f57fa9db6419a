"""Any service Apprise knows (Telegram, Discord, Teams, ntfy, json://, ...) by URL.

All configured URLs get every message, through one Apprise object built at
start-up (a URL Apprise cannot parse stops start-up). A URL may name the
message's recipient as ``{recipient}`` (an SMS gateway's target number, when
Apprise backs up another channel's provider); such a URL is completed for
each message. Apprise makes exactly
one attempt here: a ``?retry=`` in a URL is overridden, because retries are
the delivery task's job. With no URLs configured, messages are written as
``.json`` files to the outbox instead.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import Field, SecretStr

from hub.channels.base import Channel, Message, Receipt
from hub.channels.http import check_target
from hub.errors import ConfigError, PermanentError, TransientError
from hub.settings import ChannelSettings

if TYPE_CHECKING:
    import apprise as apprise_lib

CHANNEL = "apprise"
# Apprise services that post to the URL's own host (the others name a vendor's API).
HTTP_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
# Stands in a URL for the message's recipient.
RECIPIENT = "{recipient}"
# A recipient to check that a URL with RECIPIENT is one Apprise can use.
SAMPLE_RECIPIENT = "+15005550006"
# Apprise's notify types are info, success, warning and failure.
NOTIFY_TYPES = {
    "info": "info",
    "success": "success",
    "warning": "warning",
    "error": "failure",
    "critical": "failure",
}


class AppriseSettings(ChannelSettings):
    """Any Apprise service by URL (tgram://, discord://, msteams://, json://, ...)."""

    urls: list[SecretStr] = Field(default_factory=list)
    timeout_s: float = Field(15.0, gt=0)


def notify_type(message: Message) -> str:
    """Apprise's notify type for the event's ``severity`` (default ``error``)."""
    return NOTIFY_TYPES.get(str(message.data.get("severity", "error")).lower(), "failure")


def _import_apprise() -> ModuleType:
    try:
        import apprise
    except ImportError as exc:
        raise ConfigError(
            "channels.apprise.urls is set but the apprise package is not installed"
        ) from exc
    return apprise


class AppriseChannel(Channel[AppriseSettings]):
    """Alerts fanned out to every configured Apprise URL."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "alert"
    alert: ClassVar[bool] = True
    settings_model: ClassVar[type[ChannelSettings]] = AppriseSettings
    outbox_suffix: ClassVar[str] = "json"

    def __init__(self, settings: AppriseSettings, outbox_dir: Path) -> None:
        super().__init__(settings, outbox_dir)
        self.urls = [url.get_secret_value() for url in settings.urls]
        self.apprise: apprise_lib.Apprise | None = None
        self.asset: apprise_lib.AppriseAsset | None = None

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(settings.urls)

    async def _start(self) -> None:
        apprise = _import_apprise()
        self.asset = apprise.AppriseAsset(async_mode=True, storage_mode="memory")
        self.apprise = apprise.Apprise(asset=self.asset)
        for index, url in enumerate(self.urls):
            service = self._service(url.replace(RECIPIENT, SAMPLE_RECIPIENT))
            if service is None:
                # The URL carries credentials: name the setting and scheme only.
                scheme = urlsplit(url).scheme or "?"
                raise ConfigError(
                    f"channels.apprise.urls[{index}]: Apprise cannot use this {scheme}:// URL"
                )
            if RECIPIENT not in url:
                self.apprise.add(service)
        await self._check_targets(at_start=True)

    async def _check_targets(self, *, at_start: bool) -> None:
        """Apprise's HTTP services post to a host of the URL: it must be public unless allowed."""
        if self.allow_private_targets:
            return
        for index, url in enumerate(self.urls):
            if urlsplit(url).scheme in HTTP_SCHEMES:
                key = f"channels.apprise.urls[{index}]"
                await check_target(url, key, CHANNEL, at_start=at_start)

    def _service(self, url: str) -> apprise_lib.NotifyBase | None:
        apprise = _import_apprise()
        service: apprise_lib.NotifyBase | None = apprise.Apprise.instantiate(url, asset=self.asset)
        if service is not None:
            self._one_attempt_within_timeout(service, url)
        return service

    def _targets(self, recipient: str) -> apprise_lib.Apprise:
        """The fixed targets, plus the URLs naming the recipient completed for this one."""
        assert self.apprise is not None, "started by send()"
        per_recipient = [url for url in self.urls if RECIPIENT in url]
        if not per_recipient:
            return self.apprise
        targets: apprise_lib.Apprise = _import_apprise().Apprise(asset=self.asset)
        targets.add(list(self.apprise))
        for url in per_recipient:
            service = self._service(url.replace(RECIPIENT, quote(recipient, safe="+@")))
            if service is None:
                raise PermanentError(
                    "Apprise cannot reach this recipient through its URL", channel=CHANNEL
                )
            targets.add(service)
        return targets

    def _one_attempt_within_timeout(self, service: apprise_lib.NotifyBase, url: str) -> None:
        service.retry = 0
        given = parse_qs(urlsplit(url).query)
        if "cto" not in given:
            service.socket_connect_timeout = self.settings.timeout_s
        if "rto" not in given:
            service.socket_read_timeout = self.settings.timeout_s

    async def _close(self) -> None:
        self.apprise = None

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        title = message.subject or message.event_type
        document = {"title": title, "body": message.text, "notify_type": notify_type(message)}
        content = json.dumps(document, ensure_ascii=False, indent=2).encode()
        return content, Receipt(f"apprise-{message.notification_id}")

    async def _send(self, message: Message) -> Receipt:
        await self._check_targets(at_start=False)
        targets = self._targets(message.recipient)
        title = message.subject or message.event_type
        options: dict[str, Any] = {
            "body": message.text,
            "title": title,
            "notify_type": notify_type(message),
            "body_format": "text",
        }
        if hasattr(targets, "async_notify"):
            sent = await targets.async_notify(**options)
        else:
            sent = await asyncio.to_thread(targets.notify, **options)
        if not sent:
            # Apprise reports one bool for all targets and logs the reason, so a
            # rejected token looks the same as a service that is down: treat it
            # as transient and let the retry budget decide. A retry resends to
            # the targets that did succeed, too.
            raise TransientError("one or more targets failed", channel=CHANNEL)
        return Receipt(f"apprise-{message.notification_id}", {"targets": str(len(self.urls))})
