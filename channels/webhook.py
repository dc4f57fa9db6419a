"""A generic JSON webhook, signed with HMAC-SHA256 so receivers can trust it.

The body is serialised once (compact, sorted keys, UTF-8) and those exact bytes
are both signed and sent::

    {"data":{...},"event":"task.failed","id":"evt_1","notification_id":"ntf_1",
     "subject":"Task failed","text":"..."}

Headers: ``Content-Type: application/json``, ``X-Hub-Delivery: <notification
id>`` (the same on every retry, for logs; receivers dedupe on the signed
body's ``notification_id``), ``User-Agent: hub/<version>`` and, when a secret
is set, ``X-Hub-Signature`` (see :mod:`hub.webhooks`). With no URL
configured, the request it would send is written to the outbox as an
``.http`` file instead.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from hub.channels import http
from hub.channels.base import Message, Receipt
from hub.settings import ChannelSettings
from hub.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, sign

CHANNEL = "webhook"


def webhook_body(message: Message) -> bytes:
    """The JSON body, serialised once: compact, sorted keys, UTF-8."""
    document = {
        "event": message.event_type,
        "id": message.event_id,
        "notification_id": message.notification_id,
        "data": dict(message.data),
        "subject": message.subject,
        "text": message.text,
    }
    if message.alert is not None:
        document["alert"] = dict(message.alert)
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def webhook_headers(message: Message, body: bytes, secret: str) -> dict[str, str]:
    """The headers sent with ``body``; signed (at this moment) only when ``secret`` is set."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": http.USER_AGENT,
        DELIVERY_HEADER: message.notification_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    return headers


def _receiver_id(response: httpx.Response) -> str | None:
    """An ``id`` the receiver chose to return in a JSON answer, if any."""
    try:
        answer = response.json()
    except ValueError:
        return None
    if isinstance(answer, dict) and isinstance(answer.get("id"), str | int):
        return str(answer["id"])
    return None


class WebhookSettings(http.HttpSettings):
    """Generic JSON webhook signed with HMAC-SHA256 (header ``X-Hub-Signature``)."""

    url: str = ""
    secret: SecretStr = SecretStr("")


class WebhookChannel(http.HttpChannel[WebhookSettings]):
    """Events as signed JSON POSTs to one URL."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "alert"
    alert: ClassVar[bool] = True
    settings_model: ClassVar[type[ChannelSettings]] = WebhookSettings
    url_key: ClassVar[str] = "channels.webhook.url"
    outbox_suffix: ClassVar[str] = "http"

    @classmethod
    def url_of(cls, settings: Any) -> str:
        return str(settings.url)

    def _signed(self, message: Message) -> tuple[bytes, dict[str, str]]:
        body = webhook_body(message)
        return body, webhook_headers(message, body, self.settings.secret.get_secret_value())

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        body, headers = self._signed(message)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{head}\r\n".encode() + body, Receipt(message.notification_id)

    async def _send(self, message: Message) -> Receipt:
        body, headers = self._signed(message)
        delivery = message.notification_id
        response = await self.post_body(body, headers)
        return Receipt(_receiver_id(response) or delivery, {"delivery": delivery})
