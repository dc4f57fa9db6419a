"""Work that waits: what the sweeper takes over, the leases that keep it off, what waits where."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from hub.store.models import Attempt, Notification, NotificationStatus, utcnow
from hub.store.notifications import NOTIFICATIONS, Queued

# Notifications the sweeper takes at once; it takes pages until none are left.
SWEEP_PAGE = 1000


def stuck_notifications(
    db: Session, older_than: datetime, retrying_older_than: datetime, lease_expired: datetime
) -> list[Queued]:
    """``(id, channel)`` of notifications whose task the broker lost, marked as re-enqueued.

    Each is a :class:`Queued`, carrying the priority that picks its queue.
    Queued since before ``older_than``; retrying or waiting since before
    ``retrying_older_than`` (past any backoff); ``sending`` under a lease last
    renewed before ``lease_expired`` (its worker died). Every change is one
    conditional UPDATE, so a worker finishing at the same moment is never
    overwritten.
    """
    now = utcnow()
    lost = db.execute(
        update(Notification)
        .where(
            Notification.status == NotificationStatus.SENDING,
            Notification.updated_at < lease_expired,
        )
        .values(status=NotificationStatus.RETRYING, updated_at=now)
        .returning(Notification.id, Notification.channel, Notification.priority)
    ).all()
    if lost:
        db.execute(
            update(Attempt)
            .where(
                Attempt.notification_id.in_([row.id for row in lost]), Attempt.outcome == "sending"
            )
            .values(outcome="lost", error="the worker died during the attempt", finished_at=now)
        )
    stale = or_(
        and_(
            Notification.status == NotificationStatus.QUEUED, Notification.updated_at < older_than
        ),
        and_(
            Notification.status.in_((NotificationStatus.RETRYING, NotificationStatus.WAITING)),
            Notification.updated_at < retrying_older_than,
        ),
    )
    batch = select(Notification.id).where(stale).limit(SWEEP_PAGE).scalar_subquery()
    waiting = db.execute(
        update(Notification)
        .where(Notification.id.in_(batch), stale)
        .values(updated_at=now)
        .returning(Notification.id, Notification.channel, Notification.priority)
    ).all()
    return [Queued(*row) for row in (*lost, *waiting)]


def renew_leases(db: Session, notification_ids: Sequence[str]) -> None:
    """Renew the lease of those still ``sending``: their worker is still at work."""
    n = NOTIFICATIONS.c
    db.execute(
        update(NOTIFICATIONS)
        .where(n.id.in_(list(notification_ids)), n.status == NotificationStatus.SENDING)
        .values(updated_at=utcnow())
    )


def waiting_by_channel(db: Session) -> dict[str, int]:
    """How many notifications wait behind each channel's circuit or rate limit."""
    query = (
        select(Notification.channel, func.count())
        .where(Notification.status == NotificationStatus.WAITING)
        .group_by(Notification.channel)
    )
    return {channel: count for channel, count in db.execute(query)}
