"""Digests: a recipient's matching events within a window, folded into one notification.

A digest is a notification of its own (``is_digest``), ``scheduled`` until its
window closes; each notification folded into it is ``digested`` and names it
(``digest_id``). A window opens with the first event per subscription,
channel and recipient; a unique index allows one open window per key, so
concurrent routings agree on it. Folding locks the open digest's row, so beat
cannot release it between the lookup and the member's insert: an event that
arrives as the window closes opens the next one instead of being lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.store.models import NotificationStatus
from hub.store.notifications import NOTIFICATIONS, NewNotification, notification_id

# A key's open window may close between finding it and folding into it;
# the next attempt then opens a new one, which nothing else can close yet.
_ATTEMPTS = 3


def fold(db: Session, members: Sequence[NewNotification], now: datetime) -> list[NewNotification]:
    """``members`` (routed for digest subscriptions) folded into their recipients' open digests.

    Returns the members, now ``digested`` and naming their digest. Opening a
    window stores its digest notification at once, scheduled until the window
    closes: the first member's ``not_before``, which routing set to the end
    of the window (later in the recipient's quiet hours). Members already
    stored (an event routed again) are left out: they were folded the first
    time.
    """
    n = NOTIFICATIONS.c
    ids = [member.id for member in members]
    stored = set(db.scalars(select(n.id).where(n.id.in_(ids)))) if ids else set()
    return [_fold_one(db, member, now) for member in members if member.id not in stored]


def _fold_one(db: Session, member: NewNotification, now: datetime) -> NewNotification:
    for _ in range(_ATTEMPTS):
        digest_id = _lock_open(db, member) or _open(db, member, now)
        if digest_id is not None:
            return replace(
                member,
                status=NotificationStatus.DIGESTED,
                reason=f"digested: into {digest_id}",
                not_before=None,
                digest_id=digest_id,
            )
    raise RuntimeError(f"no open digest for {member.subscription!r} after {_ATTEMPTS} tries")


def _lock_open(db: Session, member: NewNotification) -> str | None:
    """The key's open digest, its row locked until commit (beat's release then waits), or None."""
    n = NOTIFICATIONS.c
    found = db.execute(
        update(NOTIFICATIONS)
        .where(
            n.is_digest.is_(True),
            n.status == NotificationStatus.SCHEDULED,
            n.subscription == member.subscription,
            n.channel == member.channel,
            n.recipient == member.recipient,
        )
        .values(updated_at=n.updated_at)
        .returning(n.id)
    ).scalar()
    return found


def _open(db: Session, member: NewNotification, now: datetime) -> str | None:
    """Open a window for the member's key; the open digest's id (ours, or a racing routing's)."""
    # Routing held the member until its window would close (quiet hours included).
    until = member.not_before or now + timedelta(seconds=member.digest_s or 0)
    key = f"digest:{member.recipient_id or member.recipient}"
    digest_id = notification_id(member.event_id, member.subscription, member.channel, key)
    row = {
        "id": digest_id,
        "event_id": member.event_id,
        "subscription": member.subscription,
        "channel": member.channel,
        "recipient": member.recipient,
        "recipient_id": member.recipient_id,
        "template": member.template,
        "status": NotificationStatus.SCHEDULED,
        "priority": member.priority,
        "category": member.category,
        "last_error": f"digest: the window closes at {until.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "not_before": until,
        "is_digest": True,
    }
    dialect = db.bind.dialect.name if db.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # No conflict target: a racing routing's open digest (the partial unique
    # index) and this id already stored (a closed window of this event) both
    # leave the row alone.
    db.execute(insert(NOTIFICATIONS).on_conflict_do_nothing(), [row])
    return _lock_open(db, member)


def members(db: Session, digest_ids: Sequence[str]) -> dict[str, list[str]]:
    """The event ids folded into each digest, oldest first (cancelled ones left out)."""
    n = NOTIFICATIONS.c
    query = (
        select(n.digest_id, n.event_id)
        .where(n.digest_id.in_(list(digest_ids)), n.status == NotificationStatus.DIGESTED)
        .order_by(n.created_at, n.id)
    )
    found: dict[str, list[str]] = {digest_id: [] for digest_id in digest_ids}
    for digest_id, event_id in db.execute(query):
        found[digest_id].append(event_id)
    return found
