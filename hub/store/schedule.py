"""Held notifications: releasing those whose time came, and cancelling what is not sent yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub.store.events import EVENTS, EventRow
from hub.store.models import NotificationStatus, utcnow
from hub.store.notifications import CANCELLABLE, NOTIFICATIONS, Queued

# Held notifications released at once; beat takes pages until none is due.
RELEASE_PAGE = 1000


def release_due(db: Session, now: datetime | None = None) -> list[Queued]:
    """Move up to :data:`RELEASE_PAGE` scheduled notifications due by ``now`` to ``queued``.

    One conditional UPDATE: a countdown that claimed one meanwhile keeps it,
    and two beats never release one twice. Those released are returned, to
    be enqueued; if that fails, they are queued in the store for the sweeper.
    """
    n = NOTIFICATIONS.c
    now = now or utcnow()
    due = (n.status == NotificationStatus.SCHEDULED, n.not_before <= now)
    page = select(n.id).where(*due).order_by(n.not_before).limit(RELEASE_PAGE).scalar_subquery()
    released = db.execute(
        update(NOTIFICATIONS)
        .where(n.id.in_(page), *due)
        .values(status=NotificationStatus.QUEUED, updated_at=now)
        .returning(n.id, n.channel, n.priority)
    )
    return [Queued(*row) for row in released]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What one cancellation key stopped: its events, and their notifications not sent yet."""

    events: list[str]
    notifications: int
    # The cancelled events as completion checks them (id and type).
    rows: list[EventRow]


def cancel(db: Session, key: str, may_cancel: Callable[[str], bool]) -> Cancelled:
    """Cancel the events published with ``key`` whose type ``may_cancel`` allows.

    Their notifications not sent yet (queued, scheduled, waiting, retrying,
    or folded into a digest still open) become ``suppressed`` with reason
    ``cancelled``; an event not routed yet routes to nothing. A digest itself
    is never cancelled (it holds other events), but is sent without them.
    """
    e = EVENTS.c
    found = db.execute(select(e.id, e.type).where(e.cancellation_key == key)).all()
    rows = [EventRow(event_id, kind, {}) for event_id, kind in found if may_cancel(kind)]
    event_ids = [row.id for row in rows]
    if not event_ids:
        return Cancelled([], 0, [])
    now = utcnow()
    db.execute(
        update(EVENTS).where(e.id.in_(event_ids), e.cancelled_at.is_(None)).values(cancelled_at=now)
    )
    n = NOTIFICATIONS.c
    result = db.execute(
        update(NOTIFICATIONS)
        .where(n.event_id.in_(event_ids), n.status.in_(CANCELLABLE), n.is_digest.is_(False))
        .values(
            status=NotificationStatus.SUPPRESSED,
            last_error=f"cancelled: cancellation_key {key!r}",
            updated_at=now,
        )
    )
    return Cancelled(event_ids, result.rowcount, rows)  # type: ignore[attr-defined]
