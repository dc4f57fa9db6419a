"""A generic JSON webhook, signed with HMAC-SHA256 so receivers can trust it.

The body is serialised once (compact, sorted keys, UTF-8) and those exact bytes
are both signed and sent::

    {"data":{...},"event":"task.failed","id":"evt_1","notification_id":"ntf_1",
     "subject":"Task failed","text":"..."}

Headers: ``Content-Type: application/json``, ``X-Hub-Delivery: <notification
id>`` (the same on every retry, for receivers to dedupe), ``User-Agent:
hub/<version>`` and, when a secret is set, ``X-Hub-Signature`` (see
:mod:`hub.webhooks`). With no URL configured, the request it would send is
written to the outbox as an ``.http`` file instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import httpx

from hub.channels import http
from hub.channels.base import Message, Receipt
from hub.settings import WebhookSettings
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


class WebhookChannel(http.HttpChannel):
    """Events as signed JSON POSTs to one URL."""

    name: ClassVar[str] = CHANNEL
    parts: ClassVar[tuple[str, ...]] = ("body.txt",)
    url_key: ClassVar[str] = "channels.webhook.url"

    def __init__(self, settings: WebhookSettings, outbox_dir: Path) -> None:
        super().__init__(settings.url, settings.timeout_s, outbox_dir)
        self.secret = settings.secret.get_secret_value()

    async def send(self, message: Message) -> Receipt:
        body = webhook_body(message)
        headers = webhook_headers(message, body, self.secret)
        delivery = message.notification_id
        if not self.url:
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            path = await self.outbox.write(message, f"{head}\r\n".encode() + body, "http")
            return Receipt(delivery, {"outbox": str(path)})
        response = await self.post_body(body, headers)
        return Receipt(_receiver_id(response) or delivery, {"delivery": delivery})
