"""Reading alert groups back, and silences: what the alerts API and ``hub alerts`` show and change.

The group's state changes (folding, notifying, acknowledging, resolving)
live in :mod:`hub.store.alerts`; this module pages through groups, gathers a
group's history (its events, and the notifications sent for it with their
attempts) and keeps silences. A silence is never deleted: ending one sets its
``ends_at``, so the groups it silenced still name a silence that can be read.

Reads answer plain dataclasses, detached from any session.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session

from hub import alerts
from hub.store import alerts as stored
from hub.store.alerts import GROUP_EVENTS, GROUPS, SILENCES
from hub.store.models import Attempt, Event, Notification

# A position in a list: the ``(created_at, id)`` of the last row of the previous page.
After = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert group as the API shows it."""

    id: str
    subscription: str
    status: str
    count: int
    labels: dict[str, Any]
    messages: list[str]
    first_seen: datetime
    last_seen: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    silence_id: str | None
    notifications_sent: int
    escalation_step: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """An event folded into a group, and when."""

    id: str
    type: str
    at: datetime


@dataclass(frozen=True, slots=True)
class History:
    """Everything that happened to a group: its events, oldest first, and its notifications."""

    events: list[GroupEvent]
    notifications: Sequence[Notification]
    attempts: Sequence[Attempt]


@dataclass(frozen=True, slots=True)
class SilenceRow:
    """A silence, in force from ``starts_at`` until ``ends_at``."""

    id: str
    matchers: dict[str, Any]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str | None
    created_at: datetime

    def active(self, now: datetime) -> bool:
        """Whether it silences matching alerts at ``now``."""
        return self.starts_at <= now < self.ends_at


_ALERT_COLUMNS = [GROUPS.c[f.name] for f in fields(AlertRow)]
_SILENCE_COLUMNS = [SILENCES.c[f.name] for f in fields(SilenceRow)]


def _after(query: Select[Any], table: Any, after: After | None) -> Select[Any]:
    """``query`` in ``(created_at, id)`` order, from just past ``after``."""
    query = query.order_by(table.c.created_at, table.c.id)
    if after is None:
        return query
    created_at, row_id = after
    return query.where(
        or_(
            table.c.created_at > created_at,
            and_(table.c.created_at == created_at, table.c.id > row_id),
        )
    )


def alert_page(
    db: Session,
    after: After | None,
    limit: int,
    status: str | None = None,
    subscription: str | None = None,
) -> list[AlertRow]:
    """Up to ``limit`` groups in ``(created_at, id)`` order past ``after``; filters if given."""
    query = _after(select(*_ALERT_COLUMNS), GROUPS, after)
    if status is not None:
        query = query.where(GROUPS.c.status == status)
    if subscription is not None:
        query = query.where(GROUPS.c.subscription == subscription)
    return [AlertRow(**row._asdict()) for row in db.execute(query.limit(limit))]


def alert(db: Session, group_id: str) -> AlertRow | None:
    """The group ``group_id``, if there is one."""
    row = db.execute(select(*_ALERT_COLUMNS).where(GROUPS.c.id == group_id)).first()
    return None if row is None else AlertRow(**row._asdict())


def history(db: Session, group_id: str) -> History:
    """Every event folded into the group, and every notification sent for it with its attempts."""
    e = GROUP_EVENTS.c
    folded = db.execute(
        select(Event.id, Event.type, e.at)
        .join(Event, Event.id == e.event_id)
        .where(e.group_id == group_id)
        .order_by(e.at, Event.id)
    )
    notifications = db.scalars(
        select(Notification)
        .where(Notification.alert_id == group_id)
        .order_by(Notification.created_at, Notification.id)
    ).all()
    attempts = db.scalars(
        select(Attempt)
        .where(Attempt.notification_id.in_([n.id for n in notifications]))
        .order_by(Attempt.notification_id, Attempt.id)
    ).all()
    return History(
        events=[GroupEvent(id, type_, at) for id, type_, at in folded],
        notifications=notifications,
        attempts=attempts,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """What acknowledging or resolving did: the group after, and why it refused if it did."""

    alert: AlertRow | None  # None: there is no such group
    refusal: str | None = None


def acknowledge(db: Session, group_id: str, by: str, now: datetime) -> Change:
    """Acknowledge a firing group as ``by``; refused for any other status."""
    if alert(db, group_id) is None:
        return Change(None)
    done = stored.acknowledge(db, group_id, by, now)
    after = alert(db, group_id)
    if done or after is None:
        return Change(after)
    return Change(
        after, f"alert {group_id!r} is {after.status}; only a firing one can be acknowledged"
    )


def resolve(db: Session, group_id: str, by: str, now: datetime) -> Change:
    """Resolve a group as ``by`` (one that notified announces it); refused if resolved already."""
    if alert(db, group_id) is None:
        return Change(None)
    done = stored.resolve(db, group_id, by, now) is not None
    after = alert(db, group_id)
    return Change(after, None if done else f"alert {group_id!r} is resolved already")


def silence_problems(
    matchers: Mapping[str, Any], starts_at: datetime, ends_at: datetime, now: datetime
) -> list[dict[str, Any]]:
    """What is wrong with a silence, as FastAPI-shaped errors (``loc`` without ``body``).

    A silence needs at least one matcher: an empty one would silence every
    alert. Times must be aware, and it must end in the future, after it starts.
    """
    problems: list[dict[str, Any]] = []
    if not matchers:
        problems.append(
            _problem("matchers", "give at least one, e.g. {'data.service': 'billing'}", "too_short")
        )
    else:
        try:
            alerts.silence_filter(matchers)
        except ValueError as exc:  # FilterError is one, and so is a bad path
            problems.append(_problem("matchers", str(exc), "invalid_matcher"))
    for name, at in (("starts_at", starts_at), ("ends_at", ends_at)):
        if at.tzinfo is None:
            message = "needs a UTC offset, e.g. 2030-01-01T00:00:00Z"
            problems.append(_problem(name, message, "timezone_aware"))
    if not problems:
        if ends_at <= now:
            problems.append(_problem("ends_at", "must be in the future", "in_the_past"))
        elif ends_at <= starts_at:
            problems.append(_problem("ends_at", "must be after starts_at", "ends_before_start"))
    return problems


def _problem(name: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": [name], "msg": message, "type": kind}


def add_silence(
    db: Session,
    matchers: dict[str, Any],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str | None,
    now: datetime,
) -> SilenceRow:
    """Store a silence checked with :func:`silence_problems`; it takes effect on the next event."""
    silence = SilenceRow(
        id=f"sil_{secrets.token_hex(16)}",
        matchers=matchers,
        # Shown in UTC whatever offset they came with, as the store reads them back.
        starts_at=starts_at.astimezone(UTC),
        ends_at=ends_at.astimezone(UTC),
        comment=comment,
        created_by=created_by,
        created_at=now,
    )
    row = {f.name: getattr(silence, f.name) for f in fields(silence)}
    db.execute(SILENCES.insert().values(**row))
    return silence


def silence_page(
    db: Session, after: After | None, limit: int, active_at: datetime | None = None
) -> list[SilenceRow]:
    """Up to ``limit`` silences in ``(created_at, id)`` order; those in force at ``active_at``."""
    query = _after(select(*_SILENCE_COLUMNS), SILENCES, after)
    if active_at is not None:
        query = query.where(SILENCES.c.starts_at <= active_at, SILENCES.c.ends_at > active_at)
    return [SilenceRow(**row._asdict()) for row in db.execute(query.limit(limit))]


def end_silence(db: Session, silence_id: str, now: datetime) -> bool:
    """End a silence at ``now``, keeping its row; False if there is none by that id.

    One that ended already keeps its ``ends_at``: ending it again changes nothing.
    """
    s = SILENCES.c
    if db.execute(select(s.id).where(s.id == silence_id)).first() is None:
        return False
    db.execute(update(SILENCES).where(s.id == silence_id, s.ends_at > now).values(ends_at=now))
    return True
