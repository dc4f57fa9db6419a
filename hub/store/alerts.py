"""Alert groups in the store: folding events in, and every change of a group's state.

Each change is a conditional UPDATE on the group's row (its status, its next
notification time, its escalation step), so two routings, two ticks (two
beats by mistake) or a worker killed halfway can neither lose nor repeat a
notification or an escalation step: whoever moves the row sends, and the
notifications it makes have deterministic ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub import alerts
from hub.store.models import AlertEvent, AlertGroup, AlertStatus, Silence

GROUPS: Table = AlertGroup.__table__  # type: ignore[assignment]
GROUP_EVENTS: Table = AlertEvent.__table__  # type: ignore[assignment]
SILENCES: Table = Silence.__table__  # type: ignore[assignment]
OPEN = (AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED, AlertStatus.SILENCED)
# A key's open group may be resolved between finding it and folding into it;
# the next attempt then opens a new one.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Group:
    """What ticks and rendering read of a group."""

    id: str
    subscription: str
    labels: dict[str, Any]
    status: str
    count: int
    messages: list[str]
    first_event_id: str
    first_seen: datetime
    last_seen: datetime
    next_notify_at: datetime | None
    notifications_sent: int
    first_notified_at: datetime | None
    last_notified_at: datetime | None
    escalation_step: int


_COLUMNS = [field.name for field in fields(Group)]


def _insert(db: Session) -> Any:
    dialect = db.bind.dialect.name if db.bind else "sqlite"
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def already_recorded(db: Session, subscription: str, event_id: str) -> bool:
    """Whether ``event_id`` was folded into a group of ``subscription`` (an event routed again)."""
    g, e = GROUPS.c, GROUP_EVENTS.c
    query = (
        select(e.group_id)
        .join(GROUPS, g.id == e.group_id)
        .where(e.event_id == event_id, g.subscription == subscription)
        .limit(1)
    )
    return db.execute(query).first() is not None


def record(
    db: Session,
    subscription: str,
    labels: dict[str, Any],
    event_id: str,
    message: str | None,
    now: datetime,
    group_wait_s: float,
    group_interval_s: float,
    silence_id: str | None,
) -> str:
    """Fold an event into its open group (or open one); the group's id.

    A new group is ``firing``, notifying after ``group_wait_s``, or
    ``silenced`` when ``silence_id`` names a silence matching the event. News
    in a group that notified already brings its next notification forward to
    ``group_interval_s`` after the last one.
    """
    key = alerts.group_key(labels)
    g = GROUPS.c
    for _ in range(_ATTEMPTS):
        found = db.execute(
            update(GROUPS)
            .where(g.subscription == subscription, g.group_key == key, g.status.in_(OPEN))
            .values(count=g.count + 1, last_seen=now, updated_at=now)
            .returning(g.id, g.messages, g.status, g.last_notified_at, g.next_notify_at)
        ).first()
        if found is not None:
            group, messages, status, last_notified_at, next_notify_at = found
            changes: dict[str, Any] = {}
            if (kept := alerts.with_message(messages, message)) != messages:
                changes["messages"] = kept
            if status == AlertStatus.FIRING and last_notified_at is not None:
                news_at = last_notified_at + timedelta(seconds=group_interval_s)
                if next_notify_at is None or news_at < next_notify_at:
                    changes["next_notify_at"] = news_at
            if changes:
                db.execute(update(GROUPS).where(g.id == group).values(**changes))
            _add_event(db, group, event_id, now)
            return str(group)
        group = alerts.group_id(subscription, key, event_id)
        opened = db.execute(
            _insert(db)(GROUPS)
            .values(
                id=group,
                subscription=subscription,
                group_key=key,
                labels=labels,
                status=AlertStatus.SILENCED if silence_id else AlertStatus.FIRING,
                silence_id=silence_id,
                count=1,
                messages=alerts.with_message([], message),
                first_event_id=event_id,
                first_seen=now,
                last_seen=now,
                next_notify_at=None if silence_id else now + timedelta(seconds=group_wait_s),
                notified_count=0,
                notifications_sent=0,
                escalation_step=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        if opened.rowcount == 1:  # type: ignore[attr-defined]
            _add_event(db, group, event_id, now)
            return group
    raise RuntimeError(f"no open alert group for {subscription!r} after {_ATTEMPTS} tries")


def _add_event(db: Session, group: str, event_id: str, now: datetime) -> None:
    db.execute(
        _insert(db)(GROUP_EVENTS)
        .values(group_id=group, event_id=event_id, at=now)
        .on_conflict_do_nothing()
    )


def active_silences(db: Session, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """``(id, matchers)`` of the silences in force at ``now``."""
    s = SILENCES.c
    query = select(s.id, s.matchers).where(s.starts_at <= now, s.ends_at > now)
    return [(silence, matchers) for silence, matchers in db.execute(query)]


def silence_for(
    silences: Iterable[tuple[str, dict[str, Any]]], event: dict[str, Any]
) -> str | None:
    """The first silence whose matchers all hold for ``event``, if any."""
    for silence, matchers in silences:
        if alerts.silence_filter(matchers).matches(event):
            return silence
    return None


def groups(db: Session, ids: Sequence[str]) -> dict[str, Group]:
    """Groups by id."""
    query = select(*(GROUPS.c[name] for name in _COLUMNS)).where(GROUPS.c.id.in_(list(ids)))
    return {row.id: Group(**row._asdict()) for row in db.execute(query)}


def open_groups(db: Session, subscriptions: Sequence[str]) -> list[Group]:
    """The open groups of ``subscriptions``."""
    g = GROUPS.c
    query = select(*(g[name] for name in _COLUMNS)).where(
        g.subscription.in_(list(subscriptions)), g.status.in_(OPEN)
    )
    return [Group(**row._asdict()) for row in db.execute(query)]


def due_notifications(db: Session, now: datetime) -> list[Group]:
    """Groups whose next notification is due: firing ones, and resolved ones to announce."""
    g = GROUPS.c
    query = select(*(g[name] for name in _COLUMNS)).where(
        g.status.in_((AlertStatus.FIRING, AlertStatus.RESOLVED)), g.next_notify_at <= now
    )
    return [Group(**row._asdict()) for row in db.execute(query)]


def take_notification(db: Session, group: Group, now: datetime, next_at: datetime | None) -> bool:
    """Move ``group`` past its due notification, the next one at ``next_at``.

    False when another tick (or a change of status) came first: only the
    caller that moved the row sends.
    """
    g = GROUPS.c
    taken = db.execute(
        update(GROUPS)
        .where(
            g.id == group.id,
            g.status == group.status,
            g.next_notify_at == group.next_notify_at,
        )
        .values(
            notified_count=g.count,
            notifications_sent=g.notifications_sent + 1,
            first_notified_at=group.first_notified_at or now,
            last_notified_at=now,
            next_notify_at=next_at,
            updated_at=now,
        )
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def escalating(db: Session, subscriptions: Sequence[str]) -> list[Group]:
    """Firing groups of ``subscriptions`` (those with escalation steps) that notified already."""
    g = GROUPS.c
    query = select(*(g[name] for name in _COLUMNS)).where(
        g.subscription.in_(list(subscriptions)),
        g.status == AlertStatus.FIRING,
        g.first_notified_at.is_not(None),
    )
    return [Group(**row._asdict()) for row in db.execute(query)]


def take_step(db: Session, group: Group, now: datetime) -> bool:
    """Move ``group`` past its next escalation step; False when acked, resolved or taken."""
    g = GROUPS.c
    taken = db.execute(
        update(GROUPS)
        .where(
            g.id == group.id,
            g.status == AlertStatus.FIRING,
            g.escalation_step == group.escalation_step,
        )
        .values(escalation_step=g.escalation_step + 1, updated_at=now)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def quiet_since(db: Session, subscription: str, before: datetime) -> list[Group]:
    """Open groups of ``subscription`` (not silenced) with no event since ``before``."""
    g = GROUPS.c
    query = select(*(g[name] for name in _COLUMNS)).where(
        g.subscription == subscription,
        g.status.in_((AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED)),
        g.last_seen < before,
    )
    return [Group(**row._asdict()) for row in db.execute(query)]


def resolve(db: Session, group_id: str, by: str, now: datetime) -> Group | None:
    """Resolve an open group; the group as it was, or None if it was resolved already.

    A group that notified (and was not silenced) announces it: the next tick
    sends one "resolved" notification.
    """
    g = GROUPS.c
    [before] = groups(db, [group_id]).values() or [None]
    if before is None or before.status == AlertStatus.RESOLVED:
        return None
    done = db.execute(
        update(GROUPS)
        .where(g.id == group_id, g.status == before.status)
        .values(
            status=AlertStatus.RESOLVED,
            resolved_at=now,
            resolved_by=by,
            next_notify_at=now if before.notifications_sent else None,
            updated_at=now,
        )
    )
    return before if done.rowcount == 1 else None  # type: ignore[attr-defined]


def acknowledge(db: Session, group_id: str, by: str, now: datetime) -> bool:
    """Acknowledge a firing group: its escalation and repeats stop. False unless it was firing."""
    g = GROUPS.c
    done = db.execute(
        update(GROUPS)
        .where(g.id == group_id, g.status == AlertStatus.FIRING)
        .values(
            status=AlertStatus.ACKNOWLEDGED,
            acknowledged_at=now,
            acknowledged_by=by,
            next_notify_at=None,
            updated_at=now,
        )
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def unsilence_ended(db: Session, now: datetime, still: Callable[[str | None], bool]) -> int:
    """Silenced groups whose silence ended (``still`` is False for it) fire again, at once."""
    g = GROUPS.c
    silenced = db.execute(select(g.id, g.silence_id).where(g.status == AlertStatus.SILENCED)).all()
    ended = [group for group, silence in silenced if not still(silence)]
    if ended:
        db.execute(
            update(GROUPS)
            .where(and_(g.id.in_(ended), g.status == AlertStatus.SILENCED))
            .values(status=AlertStatus.FIRING, silence_id=None, next_notify_at=now, updated_at=now)
        )
    return len(ended)
