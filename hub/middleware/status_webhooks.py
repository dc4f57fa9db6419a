"""Status webhooks: tell ``[[status_webhooks]]`` receivers the statuses this batch recorded.

Only once the outcomes are committed, and only by enqueueing
(:func:`hub.status_webhooks.announce`): the POSTs run in their own tasks on
their own queue, so a receiver being down never delays a notification.
"""

from __future__ import annotations

from hub import status_webhooks
from hub.middleware.base import Batch, Middleware, Turn
from hub.store.models import NotificationStatus, utcnow


def _recorded(turn: Turn) -> bool:
    """Whether the store took the turn's status.

    Sends recorded with the batch's other outcomes are not marked
    ``recorded`` (hub.recording); a send the sweeper gave away meanwhile is
    then reported too, and the receiver drops it as a duplicate by its id.
    """
    return turn.recorded or turn.status is NotificationStatus.SENT


class StatusWebhooks(Middleware):
    """Enqueue a status report for each turn whose recorded status a receiver wants."""

    def after_record(self, batch: Batch) -> None:
        wanted = status_webhooks.wanted(batch.settings)
        if not wanted:
            return
        now = utcnow()
        changes = [
            status_webhooks.StatusChange(
                notification_id=turn.notification.id,
                event_id=turn.event.id,
                status=str(turn.status),
                reason=turn.reason or None,
                channel=batch.channel,
                recipient=turn.notification.recipient,
                provider=turn.provider,
                at=now,
            )
            for turn in batch.turns
            if turn.status in wanted and _recorded(turn)
        ]
        if changes:
            status_webhooks.announce(batch.settings, changes)
