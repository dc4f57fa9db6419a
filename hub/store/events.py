"""Stored events: publishing with idempotency keys, reading back, finding lost routing.

And completion: how an event's notifications ended (:func:`event_counts`),
and marking completed those whose every notification is final
(:func:`complete_events`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Table,
    Text,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from hub.store.models import Event, EventStatus, Notification, NotificationStatus, utcnow

# The tables themselves, for Core statements on the hot path.
EVENTS: Table = Event.__table__  # type: ignore[assignment]
_NOTIFICATIONS: Table = Notification.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class EventRow:
    """What routing and delivery read of an event."""

    id: str
    type: str
    data: dict[str, Any]
    # Who the publisher named (see hub.addressing); empty for most events.
    recipients: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    # Not before this time (the publisher's deliver_at), and whether POST
    # /v1/cancel cancelled it (routing then suppresses all it makes).
    deliver_at: datetime | None = None
    cancelled: bool = False


class UndecodableEvent(ValueError):
    """A stored event's data cannot be decoded (a row no publish through the API could make)."""


def add_event(db: Session, event: Event) -> tuple[Event, bool]:
    """Store ``event``; with a known idempotency key return the first one instead.

    Returns ``(event, created)``.
    """
    if event.idempotency_key is not None:
        existing = _event_by_key(db, event.idempotency_key)
        if existing is not None:
            return existing, False
    try:
        with db.begin_nested():
            db.add(event)
    except IntegrityError:
        # Lost a race with a concurrent publish of the same key.
        existing = _event_by_key(db, event.idempotency_key or "")
        if existing is None:
            raise
        return existing, False
    return event, True


def add_events(db: Session, events: Sequence[Event]) -> list[tuple[Event, bool]]:
    """Store many events in one round trip; known or repeated keys map to their first event.

    Returns ``(event, created)`` for each input, in order.
    """
    keys = [e.idempotency_key for e in events if e.idempotency_key is not None]
    known: dict[str, Event] = {}
    if keys:
        found = db.scalars(select(Event).where(Event.idempotency_key.in_(keys)))
        known = {e.idempotency_key: e for e in found if e.idempotency_key is not None}
    results: list[tuple[Event, bool]] = []
    new: list[Event] = []
    for event in events:
        key = event.idempotency_key
        if key is not None and key in known:
            results.append((known[key], False))
            continue
        if key is not None:
            known[key] = event
        new.append(event)
        results.append((event, True))
    try:
        with db.begin_nested():
            if new:
                db.execute(insert(EVENTS), [_event_row(event) for event in new])
    except IntegrityError:
        # A concurrent publish took one of the keys: settle each event against
        # what is stored now, so a repeated key is answered with the event
        # actually stored, whichever publish stored it.
        return [add_event(db, event) for event in events]
    return results


def _event_row(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "idempotency_key": event.idempotency_key,
        "data": event.data,
        "recipients": event.recipients,
        "topics": event.topics,
        "deliver_at": event.deliver_at,
        "cancellation_key": event.cancellation_key,
        "status": EventStatus.ACCEPTED,
        "created_at": utcnow(),
    }


def _event_by_key(db: Session, key: str) -> Event | None:
    return db.scalar(select(Event).where(Event.idempotency_key == key))


def get_event(db: Session, event_id: str) -> Event | None:
    """The event without its data (see :func:`event_data`)."""
    return db.get(Event, event_id, options=[defer(Event.data)])


def event_data(db: Session, event_id: str) -> dict[str, Any] | None:
    """The event's data; None when it cannot be decoded (a row no publish could make).

    Read as text and decoded here, so that such an event can still be shown
    with the error that quarantined it.
    """
    raw = db.scalar(select(cast(Event.data, Text)).where(Event.id == event_id))
    try:
        return _decoded(event_id, raw)
    except UndecodableEvent:
        return None


def events_by_id(db: Session, event_ids: Iterable[str]) -> dict[str, EventRow]:
    """``id``, ``type`` and ``data`` of each event.

    Raises :class:`UndecodableEvent` naming the first event whose data cannot
    be decoded. The data is decoded here, after every row was read, rather
    than by the driver while it reads: a decoding error in the middle of the
    rows left SQLite's statement open, and with it a stale read snapshot that
    made the process's next transaction fail at once with "database is locked".
    """
    e = EVENTS.c
    query = select(
        e.id, e.type, cast(e.data, Text), e.recipients, e.topics, e.deliver_at, e.cancelled_at
    ).where(e.id.in_(list(event_ids)))
    rows = db.execute(query).all()
    return {
        event_id: EventRow(
            event_id,
            type,
            _decoded(event_id, raw),
            named or [],
            topics or [],
            deliver_at,
            cancelled_at is not None,
        )
        for event_id, type, raw, named, topics, deliver_at, cancelled_at in rows
    }


def _decoded(event_id: str, raw: str | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw is not None else None
    except (RecursionError, ValueError) as exc:
        raise UndecodableEvent(f"event {event_id}: data cannot be decoded: {exc}") from None
    if not isinstance(data, dict):
        raise UndecodableEvent(f"event {event_id}: data is not a JSON object")
    return data


def stuck_events(db: Session, older_than: datetime, page_size: int = 1000) -> Iterator[list[str]]:
    """Pages of events accepted before ``older_than`` and never routed, oldest first.

    Every page, not just the first: many events that keep failing (until they
    are quarantined) must not hide a newer one whose enqueue was lost.
    """
    after: tuple[datetime, str] | None = None
    while True:
        query = select(Event.id, Event.created_at).where(
            Event.status == EventStatus.ACCEPTED, Event.created_at < older_than
        )
        if after is not None:
            query = query.where(
                tuple_(Event.created_at, Event.id) > tuple_(literal(after[0]), literal(after[1]))
            )
        page = db.execute(query.order_by(Event.created_at, Event.id).limit(page_size)).all()
        if not page:
            return
        yield [row.id for row in page]
        after = (page[-1].created_at, page[-1].id)


def record_routing_failure(db: Session, event_id: str, error: str, quarantine_after: int) -> bool:
    """Count a failed routing of an unrouted event; True when that quarantines it.

    A quarantined event keeps its error and is no longer swept.
    """
    attempts = Event.routing_attempts + 1
    quarantined = db.execute(
        update(Event)
        .where(Event.id == event_id, Event.status == EventStatus.ACCEPTED)
        .values(
            routing_attempts=attempts,
            error=error,
            status=case(
                (attempts >= quarantine_after, EventStatus.QUARANTINED.value),
                else_=EventStatus.ACCEPTED.value,
            ),
        )
        .returning(Event.status)
    ).scalar()
    return quarantined == EventStatus.QUARANTINED


def delete_unrouted_events(db: Session, event_ids: Sequence[str]) -> None:
    """Forget events whose publish could not be completed (nothing was routed yet)."""
    db.execute(
        delete(Event).where(Event.id.in_(list(event_ids)), Event.status == EventStatus.ACCEPTED)
    )


# Notification states that may still change on their own; every other one is final.
UNFINISHED = frozenset(
    {
        NotificationStatus.QUEUED,
        NotificationStatus.SCHEDULED,
        NotificationStatus.WAITING,
        NotificationStatus.SENDING,
        NotificationStatus.RETRYING,
    }
)
# How the counts group the final states. ``unknown`` counts as failed: it is
# not known to have arrived, and it is announced as a failure too. The
# unfinished states are pending.
_OUTCOMES: dict[str, str] = {
    NotificationStatus.SENT: "delivered",
    NotificationStatus.DELIVERED: "delivered",
    NotificationStatus.FAILED: "failed",
    NotificationStatus.UNDELIVERED: "failed",
    NotificationStatus.EXPIRED: "failed",
    NotificationStatus.UNKNOWN: "failed",
    NotificationStatus.SUPPRESSED: "suppressed",
    NotificationStatus.DIGESTED: "digested",
}


@dataclass(frozen=True, slots=True)
class CompletedEvent:
    """An event this call marked completed: when, and how its notifications ended."""

    event_id: str
    type: str
    counts: dict[str, Any]
    completed_at: datetime


def counts_of(by_status: dict[str, int]) -> dict[str, Any]:
    """The counts an event shows for its notifications' ``{status: count}``.

    ``delivered`` (sent or delivered), ``failed`` (failed, undelivered,
    expired, unknown), ``suppressed``, ``digested`` (folded into a digest
    that is counted on its own), ``pending`` (not final yet) and ``total``,
    which they sum to; ``by_status`` keeps the states themselves.
    """
    counts: dict[str, Any] = dict.fromkeys(
        ("total", "delivered", "failed", "suppressed", "digested", "pending"), 0
    )
    for status, count in by_status.items():
        counts[_OUTCOMES.get(status, "pending")] += count
        counts["total"] += count
    counts["by_status"] = dict(by_status)
    return counts


def statuses_of(db: Session, event_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{event id: {status: count}}`` of the events' notifications: one GROUP BY, on an index."""
    n = _NOTIFICATIONS.c
    rows = db.execute(
        select(n.event_id, n.status, func.count())
        .where(n.event_id.in_(list(event_ids)))
        .group_by(n.event_id, n.status)
    )
    found: dict[str, dict[str, int]] = {}
    for event_id, status, count in rows:
        found.setdefault(event_id, {})[status] = count
    return found


def event_counts(db: Session, event_id: str) -> dict[str, Any]:
    """The event's counts as of now (see :func:`counts_of`)."""
    return counts_of(statuses_of(db, [event_id]).get(event_id, {}))


def complete_events(db: Session, event_ids: Iterable[str]) -> list[CompletedEvent]:
    """Mark completed the routed events of ``event_ids`` with no notification left unfinished.

    Each gets ``completed_at`` and its counts. Returns those this call
    completed: the UPDATE is conditional on ``routed``, so of two callers
    exactly one completes an event. The routed ones are locked first, in id
    order (PostgreSQL; SQLite has one writer at a time): of two transactions
    that each record one of an event's last two notifications, the second
    waits for the first to commit and then sees both final, where without
    the lock each would see the other's still open and neither complete it.
    """
    ids = sorted(set(event_ids))
    if not ids:
        return []
    e = EVENTS.c
    routed = db.scalars(
        select(e.id)
        .where(e.id.in_(ids), e.status == EventStatus.ROUTED)
        .order_by(e.id)
        .with_for_update()
    ).all()
    if not routed:
        return []
    statuses = statuses_of(db, routed)
    finished = {
        event_id: counts_of(statuses.get(event_id, {}))
        for event_id in routed
        if UNFINISHED.isdisjoint(statuses.get(event_id, {}))
    }
    if not finished:
        return []
    now = utcnow()
    counts = {event_id: type_coerce(c, JSON) for event_id, c in finished.items()}
    rows = db.execute(
        update(EVENTS)
        .where(e.id.in_(list(finished)), e.status == EventStatus.ROUTED)
        .values(
            status=EventStatus.COMPLETED,
            completed_at=now,
            counts=case(counts, value=e.id),
        )
        .returning(e.id, e.type)
    ).all()
    return [CompletedEvent(event_id, type, finished[event_id], now) for event_id, type in rows]
