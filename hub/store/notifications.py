"""Stored notifications and their attempts: routing's inserts, claims, outcomes, the sweeper.

State changes that race between workers (claiming a notification) are single
conditional UPDATEs, so two workers can never both own one notification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.queues import NORMAL
from hub.store.events import EVENTS
from hub.store.models import Attempt, EventStatus, Notification, NotificationStatus, utcnow

CLAIMABLE = (NotificationStatus.QUEUED, NotificationStatus.RETRYING, NotificationStatus.WAITING)
# Not sent yet: what POST /v1/cancel may still stop (a digest's members too).
CANCELLABLE = (*CLAIMABLE, NotificationStatus.SCHEDULED, NotificationStatus.DIGESTED)
RETRYABLE = (
    NotificationStatus.FAILED,
    NotificationStatus.UNKNOWN,
    NotificationStatus.UNDELIVERED,
)

# The tables themselves, for Core statements on the hot path.
NOTIFICATIONS: Table = Notification.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class NewNotification:
    id: str
    event_id: str
    subscription: str
    channel: str
    recipient: str
    template: str
    # Its subscription's ttl, in seconds from routing; None: it never expires.
    ttl_s: float | None = None
    # The stored recipient it goes to, when the event named one (by id or topic).
    recipient_id: str | None = None
    # Routing may decide at once not to send it: suppressed, with the reason.
    status: NotificationStatus = NotificationStatus.QUEUED
    reason: str | None = None
    # Its subscription's priority class: which queue it is delivered from.
    priority: str = NORMAL
    # Its subscription's category, if any.
    category: str | None = None
    # A scheduled one is held until then (hub.scheduling).
    not_before: datetime | None = None
    # Its subscription's digest window, in seconds: routing folds it into the
    # recipient's open digest (hub.store.digests), which ``digest_id`` then names.
    digest_s: float | None = None
    digest_id: str | None = None
    is_digest: bool = False
    # A failure alert's notification names its group (hub.alerts).
    alert_id: str | None = None


class Queued(tuple[str, str]):
    """``(id, channel)`` of a notification to deliver, carrying the priority that picks its queue.

    Still a pair, so code that unpacks ``(id, channel)`` keeps working; one
    that makes plain pairs sends them as ``normal``. A scheduled one carries
    the time it is held until.
    """

    priority: str
    not_before: datetime | None

    def __new__(
        cls,
        notification_id: str,
        channel: str,
        priority: str = NORMAL,
        not_before: datetime | None = None,
    ) -> Queued:
        queued = super().__new__(cls, (notification_id, channel))
        queued.priority, queued.not_before = priority, not_before
        return queued


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification this worker now owns, with what delivery needs of it."""

    id: str
    event_id: str
    channel: str
    recipient: str
    template: str
    attempts: int
    # When routing queued it: a channel's retry window runs from here.
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    # The stored recipient it goes to, when the event named one.
    recipient_id: str | None = None
    # The subscription that made it, and its category when routed (unsubscribe links).
    subscription: str = ""
    category: str | None = None
    priority: str = NORMAL
    # A digest: rendered with the events of the notifications folded into it.
    is_digest: bool = False
    # A failure alert's: rendered with its group (``alert``).
    alert_id: str | None = None


def notifications_of(db: Session, event_id: str) -> Sequence[Notification]:
    query = select(Notification).where(Notification.event_id == event_id)
    return db.scalars(query.order_by(Notification.created_at, Notification.id)).all()


def attempts_of(db: Session, notification_ids: Iterable[str]) -> Sequence[Attempt]:
    query = select(Attempt).where(Attempt.notification_id.in_(list(notification_ids)))
    return db.scalars(query.order_by(Attempt.notification_id, Attempt.id)).all()


# Built once: rows go as parameters, so one cached statement serves any count.
_INSERT_NEW_NOTIFICATIONS = {
    "postgresql": postgresql.insert(NOTIFICATIONS).on_conflict_do_nothing(index_elements=["id"]),
    "sqlite": sqlite.insert(NOTIFICATIONS).on_conflict_do_nothing(index_elements=["id"]),
}


def add_notifications(
    db: Session, event_ids: Sequence[str], new: Sequence[NewNotification]
) -> list[Queued]:
    """Insert the notifications routed from ``event_ids`` (ignoring ones a previous routing made).

    Marks the events routed and returns ``(id, channel)`` of their notifications
    still queued or scheduled, as :class:`Queued` (with their priority, and
    the time a scheduled one is held until). Three statements however many
    events: routing a batch costs what routing one does.
    """
    if not event_ids:
        return []
    now = utcnow()
    _insert(db, new, now)
    ids = list(event_ids)
    db.execute(
        # A completed event routed again (a redelivered task) stays completed.
        update(EVENTS)
        .where(EVENTS.c.id.in_(ids), EVENTS.c.status != EventStatus.COMPLETED)
        .values(status=EventStatus.ROUTED, routed_at=now)
    )
    n = NOTIFICATIONS.c
    return _to_deliver(db, n.event_id.in_(ids), now)


def add_alert_notifications(db: Session, new: Sequence[NewNotification]) -> list[Queued]:
    """Insert notifications of alert groups (ignoring ones already made); those to deliver."""
    if not new:
        return []
    now = utcnow()
    _insert(db, new, now)
    return _to_deliver(db, NOTIFICATIONS.c.id.in_([n.id for n in new]), now)


def _to_deliver(db: Session, which: Any, now: datetime) -> list[Queued]:
    n = NOTIFICATIONS.c
    query = select(n.id, n.channel, n.priority, n.not_before).where(
        which, n.status.in_((NotificationStatus.QUEUED, NotificationStatus.SCHEDULED))
    )
    return [
        Queued(nid, channel, priority, not_before if status_is_held(not_before, now) else None)
        for nid, channel, priority, not_before in db.execute(query)
    ]


def _insert(db: Session, new: Sequence[NewNotification], now: datetime) -> None:
    if new:
        rows = [
            {
                "id": n.id,
                "event_id": n.event_id,
                "subscription": n.subscription,
                "channel": n.channel,
                "recipient": n.recipient,
                "recipient_id": n.recipient_id,
                "template": n.template,
                "status": n.status,
                "priority": n.priority,
                "category": n.category,
                "last_error": n.reason,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "expires_at": None if n.ttl_s is None else now + timedelta(seconds=n.ttl_s),
                "not_before": n.not_before,
                "digest_id": n.digest_id,
                "is_digest": n.is_digest,
                "alert_id": n.alert_id,
            }
            for n in new
        ]
        dialect = db.bind.dialect.name if db.bind else "sqlite"
        db.execute(_INSERT_NEW_NOTIFICATIONS[dialect], rows)


def status_is_held(not_before: datetime | None, now: datetime) -> bool:
    """Whether a notification held until ``not_before`` must still wait at ``now``."""
    return not_before is not None and not_before > now


def notification_id(event_id: str, subscription: str, channel: str, recipient: str) -> str:
    """Deterministic id: routing the same event twice yields the same notifications."""
    key = "\x00".join((event_id, subscription, channel, recipient))
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"ntf_{digest[:32]}"


def claim_many(db: Session, notification_ids: Sequence[str]) -> list[Claimed]:
    """Atomically move the queued/retrying ones to ``sending``, each with a new attempt row.

    One conditional UPDATE: of two workers given the same id, exactly one gets
    it. A scheduled one is claimed once its time came (a countdown arriving
    before beat released it). Core statements on the hot path: the ORM's
    per-statement work cost more than the database did.
    """
    if not notification_ids:
        return []
    n = NOTIFICATIONS.c
    now = utcnow()
    claimable = or_(
        n.status.in_(CLAIMABLE),
        and_(n.status == NotificationStatus.SCHEDULED, n.not_before <= now),
    )
    claimed = [
        # By name: the columns returned and the fields grow independently.
        Claimed(**row._asdict())
        for row in db.execute(
            update(NOTIFICATIONS)
            .where(n.id.in_(list(notification_ids)), claimable)
            .values(status=NotificationStatus.SENDING, attempts=n.attempts + 1, updated_at=now)
            .returning(
                n.id,
                n.event_id,
                n.channel,
                n.recipient,
                n.template,
                n.attempts,
                n.created_at,
                n.expires_at,
                n.recipient_id,
                n.priority,
                n.subscription,
                n.category,
                n.is_digest,
                n.alert_id,
            )
        )
    ]
    if not claimed:
        return []
    a = ATTEMPTS.c
    # Attempt numbers keep counting across manual retries, which reset the budget.
    numbered = db.execute(
        select(a.notification_id, func.max(a.number))
        .where(a.notification_id.in_([c.id for c in claimed]))
        .group_by(a.notification_id)
    )
    last: dict[str, int] = {nid: number for nid, number in numbered}
    db.execute(
        insert(ATTEMPTS),
        [
            {
                "notification_id": c.id,
                "number": last.get(c.id, 0) + 1,
                "outcome": "sending",
                "started_at": now,
            }
            for c in claimed
        ],
    )
    return claimed


def release(db: Session, waiting: Mapping[str, str]) -> None:
    """Undo claims that sent nothing: ``waiting`` maps each to why it waits.

    The notification is ``waiting`` (a rate limit, an open circuit) and no
    attempt is counted.
    """
    n, a = NOTIFICATIONS.c, ATTEMPTS.c
    notification_ids = list(waiting)
    db.execute(
        update(NOTIFICATIONS)
        .where(n.id.in_(notification_ids), n.status == NotificationStatus.SENDING)
        .values(
            status=NotificationStatus.WAITING,
            last_error=case(dict(waiting), value=n.id),
            attempts=n.attempts - 1,
            updated_at=utcnow(),
        )
    )
    db.execute(
        delete(ATTEMPTS).where(
            a.notification_id.in_(list(notification_ids)), a.outcome == "sending"
        )
    )


# (notification id, provider message id, segments, details, provider)
SentReceipt = tuple[str, str, int | None, dict[str, str] | None, str | None]


def finish_sent(db: Session, receipts: Sequence[SentReceipt]) -> int:
    """Record each ``SentReceipt`` as sent, for the notifications still ``sending``.

    One UPDATE for the whole batch. Returns how many were recorded (fewer when
    the sweeper gave one away meanwhile).
    """
    n = NOTIFICATIONS.c
    now = utcnow()
    provider_ids = case({nid: pmid for nid, pmid, *_ in receipts}, value=n.id)
    segments = {nid: count for nid, _, count, *_ in receipts if count is not None}
    details = {
        nid: type_coerce(extra, JSON) for nid, _, _, extra, _ in receipts if extra is not None
    }
    providers = {nid: provider for nid, *_, provider in receipts if provider is not None}
    recorded = db.scalars(
        update(NOTIFICATIONS)
        .where(n.id.in_([nid for nid, *_ in receipts]), n.status == NotificationStatus.SENDING)
        .values(
            status=NotificationStatus.SENT,
            updated_at=now,
            sent_at=now,
            last_error=None,
            provider_message_id=provider_ids,
            segments=case(segments, value=n.id, else_=None) if segments else None,
            details=case(details, value=n.id, else_=None) if details else None,
            provider=case(providers, value=n.id, else_=None) if providers else None,
        )
        .returning(n.id)
    ).all()
    if recorded:
        a = ATTEMPTS.c
        db.execute(
            update(ATTEMPTS)
            .where(a.notification_id.in_(recorded), a.outcome == "sending")
            .values(outcome="sent", finished_at=now)
        )
    return len(recorded)


# How an attempt that did not send ended, in the attempt log, by the state it led to.
ATTEMPT_OUTCOMES = {
    NotificationStatus.SUPPRESSED: "suppressed",
    NotificationStatus.UNKNOWN: "unknown",
    NotificationStatus.FAILED: "failed",
    NotificationStatus.RETRYING: "transient",
    NotificationStatus.EXPIRED: "expired",
}


def finish(
    db: Session,
    notification_id: str,
    status: NotificationStatus,
    error: str | None = None,
    provider: str | None = None,
) -> int | None:
    """Record the end of the current attempt, unsent, and the notification's new status.

    Returns the number of the attempt it closed. Sends are recorded by
    ``finish_sent``. Only a notification still ``sending`` is changed (None
    otherwise): if the sweeper gave a stalled attempt to another worker, the
    late one records nothing.
    """
    now = utcnow()
    result = db.execute(
        update(Notification)
        .where(
            Notification.id == notification_id, Notification.status == NotificationStatus.SENDING
        )
        .values(status=status, updated_at=now, last_error=error, provider=provider)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    attempt = db.scalar(
        select(Attempt)
        .where(Attempt.notification_id == notification_id)
        .order_by(Attempt.id.desc())
        .limit(1)
    )
    if attempt is None:
        return 0
    attempt.outcome, attempt.error = ATTEMPT_OUTCOMES[status], error
    attempt.finished_at = now
    return attempt.number


def find_notifications(
    db: Session,
    *,
    ids: Sequence[str] = (),
    statuses: Sequence[str] = (),
    channel: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> Sequence[Notification]:
    """Notifications matching every given filter, newest first."""
    query = select(Notification)
    if ids:
        query = query.where(Notification.id.in_(list(ids)))
    if statuses:
        query = query.where(Notification.status.in_(list(statuses)))
    if channel:
        query = query.where(Notification.channel == channel)
    if since:
        query = query.where(Notification.updated_at >= since)
    return db.scalars(query.order_by(Notification.updated_at.desc()).limit(limit)).all()


def requeue(db: Session, ids: Sequence[str]) -> list[Queued]:
    """Put failed/unknown/undelivered notifications back in the queue with fresh attempts.

    Returns those requeued; others are left alone.
    """
    candidates = [
        Queued(n.id, n.channel, n.priority)
        for n in find_notifications(db, ids=ids, statuses=RETRYABLE, limit=len(ids) or 1)
    ]
    if candidates:
        db.execute(
            update(Notification)
            .where(
                Notification.id.in_([nid for nid, _ in candidates]),
                Notification.status.in_(RETRYABLE),
            )
            .values(status=NotificationStatus.QUEUED, attempts=0, updated_at=utcnow())
        )
    return candidates


def record_provider_status(
    db: Session,
    channel: str,
    provider_message_id: str,
    status: NotificationStatus,
    error: str | None,
) -> Notification | None:
    """Apply a provider's delivery report; the notification, or None when none has that id."""
    notification = db.scalar(
        select(Notification).where(
            Notification.channel == channel,
            Notification.provider_message_id == provider_message_id,
        )
    )
    if notification is not None:
        notification.status, notification.last_error = status, error
        notification.updated_at = utcnow()
    return notification
