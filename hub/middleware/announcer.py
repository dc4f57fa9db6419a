"""The failure announcer: a final failure becomes a ``notification.failed`` event.

So a subscription can alert someone about it. Delivery does not publish
events itself: the function that does is handed to this middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hub import logs
from hub.errors import BrokerUnavailable, EventError
from hub.middleware.base import Batch, Middleware, Turn
from hub.store.models import NotificationStatus

log = logging.getLogger(__name__)

FAILED_EVENT = "notification.failed"
FINAL_FAILURES = (NotificationStatus.FAILED, NotificationStatus.UNKNOWN)

# publish(event_type, data, idempotency_key=..., keep_if_broker_down=...)
Publish = Callable[..., Any]


class Announcer(Middleware):
    """Publish ``notification.failed`` for each failure this batch recorded."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def after_record(self, batch: Batch) -> None:
        for turn in batch.turns:
            # A failed failure alert must not raise another one, forever.
            if turn.recorded and turn.status in FINAL_FAILURES and turn.event.type != FAILED_EVENT:
                self._announce(batch.channel, turn)

    def _announce(self, channel: str, turn: Turn) -> None:
        notification = turn.notification
        data = {
            "notification_id": notification.id,
            "event_id": turn.event.id,
            "event_type": turn.event.type,
            "channel": channel,
            "recipient": notification.recipient,
            "status": str(turn.status),
            "attempts": notification.attempts,
            "error": turn.reason,
        }
        # Keyed by attempt number: a redelivered task announces once, while a new
        # failure after a manual retry is announced again.
        key = f"failed:{notification.id}:{turn.attempt_number}"
        try:
            self._publish(FAILED_EVENT, data, idempotency_key=key, keep_if_broker_down=True)
        except (EventError, BrokerUnavailable) as exc:
            # The failure is recorded on the notification either way.
            log.error(
                "could not publish %s for %s: %s",
                FAILED_EVENT,
                notification.id,
                exc,
                extra=logs.ids(notification_id=notification.id),
            )
        except Exception:
            # Not even a store error may undo a batch whose outcomes are committed.
            log.exception(
                "could not publish %s for %s",
                FAILED_EVENT,
                notification.id,
                extra=logs.ids(notification_id=notification.id),
            )
