"""Retention: deleting finished events, notifications and attempts, in bounded batches.

Only what is final goes. An event goes with its notifications and their
attempts when it was created before ``events_before``, it is routed,
completed or quarantined (an accepted one is still to be routed), and none
of its notifications

- is in flight (queued, scheduled, waiting, sending, retrying),
- changed at or after ``events_before`` (a late send, a delivery report),
- is folded into a digest that is still open (its digest renders it).

Events an alert group names (``alert_groups.first_event_id``,
``alert_events``) are kept: they are the groups' history, and groups are
never deleted. So are opt-outs, recipients, topics, subscriptions, template
versions and keys, which nothing here touches. Attempts of final
notifications started before ``attempts_before`` go on their own.

Each transaction deletes at most ``batch`` notifications (with their
attempts) or ``batch`` attempts, so a large purge never holds long locks
and its progress is kept if it stops. The in-flight check is in each DELETE
itself: a notification retried by hand between two batches is left alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import Session, aliased

from hub.store.db import session
from hub.store.events import EVENTS, UNFINISHED
from hub.store.models import AlertEvent, AlertGroup, EventStatus
from hub.store.notifications import ATTEMPTS, NOTIFICATIONS

# Events in these states are no longer routed: their notifications are all there is.
_SETTLED_EVENTS = (EventStatus.ROUTED, EventStatus.COMPLETED, EventStatus.QUARANTINED)
_IN_FLIGHT = [str(status) for status in UNFINISHED]


def _old_finished_events(before: datetime) -> Select[Any]:
    """The ids of events that may go, oldest first."""
    e, n = EVENTS.c, NOTIFICATIONS.c
    digest = aliased(NOTIFICATIONS)
    busy = exists().where(n.event_id == e.id, (n.status.in_(_IN_FLIGHT)) | (n.updated_at >= before))
    in_open_digest = exists().where(
        n.event_id == e.id,
        n.digest_id.is_not(None),
        digest.c.id == n.digest_id,
        digest.c.status.in_(_IN_FLIGHT),
    )
    alerted = exists().where(AlertGroup.first_event_id == e.id)
    grouped = exists().where(AlertEvent.event_id == e.id)
    return (
        select(e.id)
        .where(
            e.created_at < before,
            e.status.in_([str(status) for status in _SETTLED_EVENTS]),
            ~busy,
            ~in_open_digest,
            ~alerted,
            ~grouped,
        )
        .order_by(e.created_at, e.id)
    )


def purge_events_batch(db: Session, before: datetime, batch: int) -> tuple[int, int, int]:
    """One batch: up to ``batch`` notifications (and attempts) of old finished events.

    Events left with no notification go too. Returns the ``(events,
    notifications, attempts)`` deleted.
    """
    n, a, e = NOTIFICATIONS.c, ATTEMPTS.c, EVENTS.c
    event_ids = list(db.scalars(_old_finished_events(before).limit(batch)))
    if not event_ids:
        return 0, 0, 0
    notification_ids = list(
        db.scalars(
            select(n.id)
            .where(n.event_id.in_(event_ids), n.status.not_in(_IN_FLIGHT))
            .order_by(n.id)
            .limit(batch)
        )
    )
    attempts = notifications = 0
    if notification_ids:
        # The status is checked again by the DELETE: one retried by hand since is kept.
        final = select(n.id).where(n.id.in_(notification_ids), n.status.not_in(_IN_FLIGHT))
        attempts = _count(db.execute(delete(ATTEMPTS).where(a.notification_id.in_(final))))
        notifications = _count(
            db.execute(
                delete(NOTIFICATIONS).where(n.id.in_(notification_ids), n.status.not_in(_IN_FLIGHT))
            )
        )
    emptied = ~exists().where(n.event_id == e.id)
    events = _count(db.execute(delete(EVENTS).where(e.id.in_(event_ids), emptied)))
    return events, notifications, attempts


def purge_attempts_batch(db: Session, before: datetime, batch: int) -> int:
    """One batch: up to ``batch`` attempts started before ``before`` of final notifications."""
    a, n = ATTEMPTS.c, NOTIFICATIONS.c
    ids = list(
        db.scalars(
            select(a.id)
            .join(NOTIFICATIONS, n.id == a.notification_id)
            .where(a.started_at < before, n.status.not_in(_IN_FLIGHT))
            .order_by(a.id)
            .limit(batch)
        )
    )
    if not ids:
        return 0
    final = select(n.id).where(n.status.not_in(_IN_FLIGHT))
    return _count(db.execute(delete(ATTEMPTS).where(a.id.in_(ids), a.notification_id.in_(final))))


def purge(
    database_url: str,
    *,
    events_before: datetime | None,
    attempts_before: datetime | None,
    batch: int = 1000,
) -> dict[str, int]:
    """Delete finished rows older than the given times, one transaction per batch.

    ``None`` skips a kind. Returns the counts deleted: ``events``,
    ``notifications`` and ``attempts``.
    """
    counts = {"events": 0, "notifications": 0, "attempts": 0}
    if events_before is not None:
        while True:
            with session(database_url) as db:
                events, notifications, attempts = purge_events_batch(db, events_before, batch)
            counts["events"] += events
            counts["notifications"] += notifications
            counts["attempts"] += attempts
            if not (events or notifications):
                break
    if attempts_before is not None:
        while True:
            with session(database_url) as db:
                deleted = purge_attempts_batch(db, attempts_before, batch)
            counts["attempts"] += deleted
            if deleted < batch:
                break
    return counts


def _count(result: Any) -> int:
    return int(result.rowcount or 0)
