"""The poison guard: give up on a message that keeps killing the workers sending it.

An attempt is counted when a notification is claimed. A worker that dies
mid-send never records an outcome, so the sweeper hands the notification to
another worker; once the claims exceed the retry budget, it is failed
instead of sent again.
"""

from __future__ import annotations

from hub.middleware.base import Batch, Middleware
from hub.middleware.retries import max_attempts
from hub.store.models import NotificationStatus


class PoisonGuard(Middleware):
    """Fail notifications claimed more often than the retry budget allows."""

    def before_send(self, batch: Batch) -> None:
        limit = max_attempts(batch.settings, batch.channel)
        for turn in batch.undecided():
            if turn.notification.attempts > limit:
                reason = f"gave up: {turn.notification.attempts - 1} attempts never finished"
                turn.decide(NotificationStatus.FAILED, reason)
