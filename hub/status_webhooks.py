"""Status webhooks: a signed POST to each ``[[status_webhooks]]`` receiver when a status is reached.

The body is serialised once (compact, sorted keys, UTF-8), and those bytes
are signed and sent::

    {"at":"2024-06-10T12:00:00.123Z","channel":"email","event_id":"evt_1",
     "id":"ntf_1.sent","notification_id":"ntf_1","provider":"default",
     "reason":null,"recipient":"ada@example.com","status":"sent"}

``id`` is the notification's id and the status, so it is the same on every
retry of one report (receivers dedupe on it) and ``delivered`` is never taken
for a duplicate of ``sent``. Headers are those of the webhook channel:
``X-Hub-Delivery: <id>`` and, with a secret, ``X-Hub-Signature``
(:mod:`hub.webhooks`; verify with :func:`hub.webhooks.verify`).

Nothing here runs on the delivery path but an enqueue: once an outcome is
committed, :func:`announce` publishes one ``hub.status_webhook`` task per
receiver that wants the status, on the ``status_webhooks`` queue; a receiver
that is down delays only those tasks. Each task makes one POST
(:func:`post`); a transient failure (connection, 408, 429, 5xx) runs again
after the deliveries' backoff (``delivery.backoff_*``, ``Retry-After``
honoured) up to ``delivery.max_attempts``, a permanent one (other 4xx) is
logged and dropped. Failures are logged, never raised into delivery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hub.errors import BrokerUnavailable
from hub.queues import STATUS_WEBHOOKS
from hub.settings import Settings, StatusWebhookSettings
from hub.store.models import utcnow
from hub.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    from hub.store.models import Notification

log = logging.getLogger(__name__)

TASK = "hub.status_webhook"
# The key that names a receiver in errors and logs (never its URL: it may hold a token).
KEY = "status_webhooks"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A notification that reached ``status``: what its receivers are told."""

    notification_id: str
    event_id: str
    status: str
    reason: str | None
    channel: str
    recipient: str
    provider: str | None
    at: datetime

    @classmethod
    def of(cls, notification: Notification) -> StatusChange:
        """The change a stored notification's current status is (a provider's report)."""
        return cls(
            notification.id,
            notification.event_id,
            str(notification.status),
            notification.last_error,
            notification.channel,
            notification.recipient,
            notification.provider,
            notification.updated_at or utcnow(),
        )

    def body(self) -> dict[str, Any]:
        """The JSON document, with primitives only (it travels in a task's arguments)."""
        at = self.at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "id": f"{self.notification_id}.{self.status}",
            "notification_id": self.notification_id,
            "event_id": self.event_id,
            "status": self.status,
            "reason": self.reason or None,
            "channel": self.channel,
            "recipient": self.recipient,
            "provider": self.provider,
            "at": at,
        }


def wanted(settings: Settings) -> frozenset[str]:
    """Every status some receiver wants; empty when none is configured."""
    return frozenset(status for hook in settings.status_webhooks for status in hook.statuses)


def announce(settings: Settings, changes: Iterable[StatusChange]) -> int:
    """Enqueue a report of each change to each receiver that wants its status; never raises.

    Call it once the changes are committed. Returns the tasks enqueued.
    """
    hooks = settings.status_webhooks
    if not hooks:
        return 0
    from hub.worker import enqueue  # the Celery app is built on first use, not at import

    enqueued = 0
    for change in changes:
        for index, hook in enumerate(hooks):
            if change.status not in hook.statuses:
                continue
            try:
                enqueue(TASK, [index, hook.url, change.body()], STATUS_WEBHOOKS)
                enqueued += 1
            except BrokerUnavailable as exc:
                log.error(
                    "could not enqueue %s[%d] for %s %s: %s",
                    KEY, index, change.notification_id, change.status, exc,
                )  # fmt: skip
            except Exception:
                # The outcome is committed; nothing here may undo or fail it.
                log.exception("could not enqueue %s[%d]", KEY, index)
    return enqueued


def receiver(settings: Settings, index: int, url: str) -> StatusWebhookSettings | None:
    """The receiver a task was enqueued for, as the settings are now; None once removed.

    By position and URL both: a reload that reorders receivers must not sign
    one's reports with another's secret.
    """
    hooks = settings.status_webhooks
    if 0 <= index < len(hooks) and hooks[index].url == url:
        return hooks[index]
    return next((hook for hook in hooks if hook.url == url), None)


def encode(body: dict[str, Any]) -> bytes:
    """The bytes sent and signed: compact, sorted keys, UTF-8 (as the webhook channel's)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def headers(hook: StatusWebhookSettings, body_id: str, content: bytes) -> dict[str, str]:
    """The request's headers: signed at this moment when the receiver has a secret."""
    from hub.channels.http import USER_AGENT

    found = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: body_id}
    if secret := hook.secret.get_secret_value():
        found[SIGNATURE_HEADER] = sign(secret, content)
    return found


async def post(
    hook: StatusWebhookSettings, key: str, body: dict[str, Any], allow_private_targets: bool
) -> None:
    """One signed POST of ``body`` to ``hook``; raises the classified hub error on failure.

    The HTTP edge is the HTTP channels' (:mod:`hub.channels.http`): the same
    status classification, ``Retry-After`` and private-address refusal.
    """
    from hub.channels import http

    http.check_url(hook.url, key)
    if not allow_private_targets:
        await http.check_target(hook.url, key, KEY, at_start=False)
    content = encode(body)
    async with http.new_client(hook.timeout_s) as client:
        await http.post(client, KEY, hook.url, content, headers(hook, str(body["id"]), content))
