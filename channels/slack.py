"""Slack through an incoming webhook: one coloured attachment of Block Kit blocks.

Slack answers ``200 ok`` or an error as plain text (``404 no_service``,
``400 invalid_payload``, ``429`` with ``Retry-After``), classified by
:mod:`hub.channels.http`. Incoming webhooks return no message id, so the
receipt id is derived from the notification. With no webhook URL configured,
payloads are written as ``.json`` files to the outbox instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import SecretStr

from hub.channels import http
from hub.channels.base import Message, Receipt
from hub.settings import ChannelSettings

CHANNEL = "slack"
COLOURS = {
    "info": "#439FE0",
    "success": "#2EB886",
    "warning": "#DAA038",
    "error": "#E01E5A",
    "critical": "#A30200",
    "resolved": "#2EB886",
}
MAX_FIELDS = 10  # Slack's limit for one section
MAX_FIELD_CHARS = 80  # longer values (tracebacks, payloads) belong in the body
HEADER_CHARS = 150
SECTION_CHARS = 3000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fields(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The short scalar entries of the event data, as section fields."""
    fields = []
    for key, value in data.items():
        if key == "url" or value is None or not isinstance(value, str | int | float | bool):
            continue
        text = str(value)
        if len(text) > MAX_FIELD_CHARS or "\n" in text:
            continue
        fields.append({"type": "mrkdwn", "text": f"*{_mrkdwn(str(key))}*\n{_mrkdwn(text)}"})
    return fields[:MAX_FIELDS]


def build_payload(message: Message) -> dict[str, Any]:
    """The incoming-webhook payload: fallback text plus one attachment coloured by severity."""
    severity = str(message.data.get("severity", "error")).lower()
    title = message.subject or message.event_type
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, HEADER_CHARS)}}
    ]
    if body := message.text.strip():
        text = _clip(_mrkdwn(body), SECTION_CHARS)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if fields := _fields(message.data):
        blocks.append({"type": "section", "fields": fields})
    context = f"`{_mrkdwn(message.event_type)}` · {_mrkdwn(message.event_id)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    buttons = []
    # Slack rejects the whole message over a button with a bad URL, so only http(s).
    if isinstance(url := message.data.get("url"), str) and url.startswith(("https://", "http://")):
        buttons.append(
            {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": url}
        )
    alert = message.alert or {}
    ack_url = alert.get("ack_url")
    if alert.get("status") == "firing" and isinstance(ack_url, str) and ack_url.startswith("http"):
        # A link: the ack page's own button POSTs, so an unfurler fetching it acks nothing.
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "url": ack_url,
            }
        )
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    if alert.get("status") == "resolved":
        severity = "resolved"
    fallback = f"[{severity}] {title}"
    return {
        "text": _mrkdwn(fallback),  # shown above the attachment and in notifications
        "attachments": [
            {
                "color": COLOURS.get(severity, COLOURS["error"]),
                "fallback": fallback,
                "blocks": blocks,
            }
        ],
    }


class SlackSettings(http.HttpSettings):
    """Slack incoming webhook. Empty: payloads go to ``var/outbox/slack/``."""

    webhook_url: SecretStr = SecretStr("")


class SlackChannel(http.HttpChannel[SlackSettings]):
    """Alerts to one Slack channel through its incoming webhook."""

    name: ClassVar[str] = CHANNEL
    queue: ClassVar[str] = "alert"
    alert: ClassVar[bool] = True
    settings_model: ClassVar[type[ChannelSettings]] = SlackSettings
    url_key: ClassVar[str] = "channels.slack.webhook_url"

    @classmethod
    def url_of(cls, settings: Any) -> str:
        return str(settings.webhook_url.get_secret_value())

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        return _body(message), Receipt(f"slack-{message.notification_id}")

    async def _send(self, message: Message) -> Receipt:
        await self.post_body(_body(message), {"Content-Type": "application/json; charset=utf-8"})
        return Receipt(f"slack-{message.notification_id}")


def _body(message: Message) -> bytes:
    return json.dumps(build_payload(message), ensure_ascii=False).encode()
