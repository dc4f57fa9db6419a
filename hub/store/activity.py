"""What the hub did: pages of notifications and events under filters, and windowed counts.

Lists page by ``(created_at, id)`` (``ix_notifications_created``,
``ix_events_created``), ascending by default or descending for "the most
recent first"; a page is one query, and its attempts or counts one more.
Windowed counts filter on ``status IN (...) AND updated_at >= ...``, which
``ix_notifications_status_updated`` answers without reading the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    exists,
    extract,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from hub.store.models import Event, Notification, NotificationStatus

# A position in a list: the ``(created_at, id)`` of the last row of the previous page.
After = tuple[datetime, str]

ALL_STATUSES = tuple(status.value for status in NotificationStatus)
SUCCEEDED = (NotificationStatus.SENT.value, NotificationStatus.DELIVERED.value)
FAILED = NotificationStatus.FAILED.value


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    """Which notifications to list; every given field must match (``statuses``: any of them)."""

    event_type: str | None = None
    channel: str | None = None
    statuses: Sequence[str] = ()
    # An address as sent, or a stored recipient's id.
    recipient: str | None = None
    # Created at or after ``since``, before ``until``.
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list; ``recipient``: one of its notifications goes to them."""

    type: str | None = None
    statuses: Sequence[str] = ()
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _paged(query: Select[Any], model: Any, after: After | None, descending: bool) -> Select[Any]:
    """``query`` in ``(created_at, id)`` order (or its reverse), from just past ``after``."""
    created_at, row_id = model.created_at, model.id
    if descending:
        query = query.order_by(created_at.desc(), row_id.desc())
    else:
        query = query.order_by(created_at, row_id)
    if after is None:
        return query
    at, last_id = after
    if descending:
        return query.where(or_(created_at < at, and_(created_at == at, row_id < last_id)))
    return query.where(or_(created_at > at, and_(created_at == at, row_id > last_id)))


def _to(recipient: str) -> ColumnElement[bool]:
    return or_(Notification.recipient == recipient, Notification.recipient_id == recipient)


def notification_page(
    db: Session,
    filters: NotificationFilter,
    after: After | None = None,
    limit: int = 100,
    descending: bool = False,
) -> list[tuple[Notification, str]]:
    """Up to ``limit`` notifications past ``after``, each with its event's type."""
    query = select(Notification, Event.type).join(Event, Event.id == Notification.event_id)
    if filters.event_type is not None:
        query = query.where(Event.type == filters.event_type)
    if filters.channel is not None:
        query = query.where(Notification.channel == filters.channel)
    if filters.statuses:
        query = query.where(Notification.status.in_(list(filters.statuses)))
    if filters.recipient is not None:
        query = query.where(_to(filters.recipient))
    if filters.since is not None:
        query = query.where(Notification.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Notification.created_at < filters.until)
    query = _paged(query, Notification, after, descending).limit(limit)
    return [(notification, event_type) for notification, event_type in db.execute(query)]


def event_page(
    db: Session,
    filters: EventFilter,
    after: After | None = None,
    limit: int = 100,
    descending: bool = False,
) -> Sequence[Event]:
    """Up to ``limit`` events past ``after``."""
    query = select(Event)
    if filters.type is not None:
        query = query.where(Event.type == filters.type)
    if filters.statuses:
        query = query.where(Event.status.in_(list(filters.statuses)))
    if filters.recipient is not None:
        query = query.where(
            exists().where(Notification.event_id == Event.id, _to(filters.recipient))
        )
    if filters.since is not None:
        query = query.where(Event.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Event.created_at < filters.until)
    return db.scalars(_paged(query, Event, after, descending).limit(limit)).all()


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Notifications whose status last changed within a window, by channel and status.

    ``series[channel]`` holds ``buckets`` equal slices of the window, oldest
    first, each ``[succeeded, failed]`` (sent or delivered; failed).
    """

    by_channel: dict[str, dict[str, int]]
    series: dict[str, list[list[int]]]


def window_counts(db: Session, start: datetime, end: datetime, buckets: int) -> WindowCounts:
    """Counts of notifications updated in ``[start, end)``: two GROUP BYs on one index range."""
    n = Notification
    in_window = and_(n.status.in_(ALL_STATUSES), n.updated_at >= start, n.updated_at < end)
    by_channel: dict[str, dict[str, int]] = {}
    for channel, status, count in db.execute(
        select(n.channel, n.status, func.count()).where(in_window).group_by(n.channel, n.status)
    ):
        by_channel.setdefault(channel, {})[status] = count

    width_s = max((end - start).total_seconds() / buckets, 1e-3)
    bucket = _bucket(db, start, width_s)
    outcome = case((n.status == FAILED, 1), else_=0)
    series = {channel: [[0, 0] for _ in range(buckets)] for channel in by_channel}
    finished = and_(n.status.in_((*SUCCEEDED, FAILED)), n.updated_at >= start, n.updated_at < end)
    for channel, index, failed, count in db.execute(
        select(n.channel, bucket, outcome, func.count())
        .where(finished)
        .group_by(n.channel, bucket, outcome)
    ):
        slot = min(max(int(index or 0), 0), buckets - 1)
        series.setdefault(channel, [[0, 0] for _ in range(buckets)])[slot][int(failed)] += count
    return WindowCounts(by_channel, series)


def _bucket(db: Session, start: datetime, width_s: float) -> Any:
    """The index of the ``width_s`` slice from ``start`` that ``updated_at`` falls in, in SQL."""
    if db.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", Notification.updated_at - start)
        return func.floor(seconds / width_s)
    # SQLite keeps "YYYY-MM-DD HH:MM:SS.ffffff" in UTC; julianday reads it in days.
    naive = start.replace(tzinfo=None).isoformat(sep=" ")
    days = func.julianday(Notification.updated_at) - func.julianday(naive)
    return cast(days * 86400.0 / width_s, Integer)


def oldest_queued(db: Session) -> datetime | None:
    """When the notification waiting longest in ``queued`` entered it (an index's first entry)."""
    return db.scalar(
        select(func.min(Notification.updated_at)).where(
            Notification.status == NotificationStatus.QUEUED
        )
    )
