"""Stored recipients and topic members: merge-upserts in a few statements, paging by key.

A recipient is one JSON-like document (``email``, ``phone``, ``slack``,
``locale``, ``timezone``, ``data``, ``preferences``), and a change to it is a
JSON Merge Patch (RFC 7396): absent keys are kept, ``None`` clears, objects
merge key by key. The patch is applied here, in Python, between reading the
rows locked and writing them back, so two callers changing different fields
of one recipient at once both keep their change. Callers validate patches
first (:mod:`hub.recipients`); nothing here checks them.

Reads answer plain dataclasses, never ORM objects: routing holds thousands at
once and must not drag a session's identity map along.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.store.models import Recipient, TopicMember, utcnow

RECIPIENTS: Table = Recipient.__table__  # type: ignore[assignment]
TOPIC_MEMBERS: Table = TopicMember.__table__  # type: ignore[assignment]

# The recipient's fields a patch may name; a cleared object (data, preferences) is {}.
FIELDS = ("email", "phone", "slack", "locale", "timezone", "data", "preferences")
_OBJECTS = ("data", "preferences")
# Ids per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500

# Built once: rows go as parameters, so one cached statement serves any count.
_INSERT_MISSING_RECIPIENTS = {
    "postgresql": postgresql.insert(RECIPIENTS)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(RECIPIENTS.c.id),
    "sqlite": sqlite.insert(RECIPIENTS)
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(RECIPIENTS.c.id),
}
_INSERT_NEW_MEMBERS = {
    "postgresql": postgresql.insert(TOPIC_MEMBERS)
    .on_conflict_do_nothing(index_elements=["topic", "recipient_id"])
    .returning(TOPIC_MEMBERS.c.recipient_id),
    "sqlite": sqlite.insert(TOPIC_MEMBERS)
    .on_conflict_do_nothing(index_elements=["topic", "recipient_id"])
    .returning(TOPIC_MEMBERS.c.recipient_id),
}


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """A stored recipient, detached from any session."""

    id: str
    email: str | None
    phone: str | None
    slack: str | None
    locale: str | None
    timezone: str | None
    data: dict[str, Any]
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecipientChange:
    """A validated merge patch of one recipient's fields (keys of :data:`FIELDS`)."""

    id: str
    patch: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Member:
    """A topic's member, and when it joined the topic."""

    recipient_id: str
    created_at: datetime


def upsert_recipients(
    db: Session, changes: Sequence[RecipientChange]
) -> list[tuple[RecipientRow, bool]]:
    """Create or merge-patch each changed recipient; ``(row, created)`` per change, in order.

    Three statements for any number of changes (the read split per 500 ids):
    insert the missing rows empty, read every row locked, write each merged
    row back. Inserting first makes the row lock cover recipients that did
    not exist yet, and ids are locked in sorted order, so concurrent batches
    neither lose each other's fields nor deadlock. Changes naming one id
    twice apply in order.
    """
    if not changes:
        return []
    now = utcnow()
    ids = sorted({change.id for change in changes})
    empty = [
        {"id": id, "data": {}, "preferences": {}, "created_at": now, "updated_at": now}
        for id in ids
    ]
    created = set(db.scalars(_INSERT_MISSING_RECIPIENTS[_dialect(db)], empty))
    current: dict[str, dict[str, Any]] = {}
    created_at: dict[str, datetime] = {}
    for chunk in _chunks(ids):
        query = select(RECIPIENTS).where(RECIPIENTS.c.id.in_(chunk)).order_by(RECIPIENTS.c.id)
        for row in db.execute(query.with_for_update()):
            current[row.id] = {name: getattr(row, name) for name in FIELDS}
            created_at[row.id] = row.created_at
    for change in changes:
        current[change.id] = _complete(merge_patch(current[change.id], change.patch))
    db.execute(
        update(RECIPIENTS).where(RECIPIENTS.c.id == bindparam("_id")),
        [{"_id": id, **current[id], "updated_at": now} for id in ids],
    )
    return [
        (
            RecipientRow(
                id=change.id, **current[change.id], created_at=created_at[change.id], updated_at=now
            ),
            change.id in created,
        )
        for change in changes
    ]


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as RFC 7396 says; a field patched to None is cleared."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def get_recipient(db: Session, recipient_id: str) -> RecipientRow | None:
    """The recipient ``recipient_id``, or None."""
    return recipients_by_id(db, [recipient_id]).get(recipient_id)


def recipients_by_id(db: Session, ids: Iterable[str]) -> dict[str, RecipientRow]:
    """The stored recipients among ``ids``, by id (unknown ids are simply absent).

    One query per 500 ids, so routing a topic page of 1,000 costs two.
    """
    found: dict[str, RecipientRow] = {}
    for chunk in _chunks(sorted(set(ids))):
        for row in db.execute(select(RECIPIENTS).where(RECIPIENTS.c.id.in_(chunk))):
            found[row.id] = RecipientRow(**row._asdict())
    return found


def unknown_recipients(db: Session, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` name no stored recipient.

    The known ones are share-locked on PostgreSQL until the transaction ends,
    so a concurrent delete cannot slip between this check and an insert of
    memberships; on SQLite the foreign key refuses such a membership.
    """
    wanted = set(ids)
    known: set[str] = set()
    for chunk in _chunks(sorted(wanted)):
        query = select(RECIPIENTS.c.id).where(RECIPIENTS.c.id.in_(chunk))
        known.update(db.scalars(query.with_for_update(read=True)))
    return wanted - known


def delete_recipient(db: Session, recipient_id: str) -> bool:
    """Delete the recipient and its topic memberships; False if there was none."""
    # Explicit, not left to ON DELETE CASCADE: SQLite enforces it only on
    # connections that turned foreign keys on.
    db.execute(delete(TOPIC_MEMBERS).where(TOPIC_MEMBERS.c.recipient_id == recipient_id))
    deleted = delete(RECIPIENTS).where(RECIPIENTS.c.id == recipient_id)
    return db.scalar(deleted.returning(RECIPIENTS.c.id)) is not None


def add_members(db: Session, topic: str, recipient_ids: Iterable[str]) -> int:
    """Add recipients (that must exist) to ``topic``; members already there are kept as they were.

    Returns how many joined. One statement however many.
    """
    now = utcnow()
    rows = [
        {"topic": topic, "recipient_id": id, "created_at": now} for id in sorted(set(recipient_ids))
    ]
    if not rows:
        return 0
    return len(db.scalars(_INSERT_NEW_MEMBERS[_dialect(db)], rows).all())


def remove_member(db: Session, topic: str, recipient_id: str) -> bool:
    """Take ``recipient_id`` out of ``topic``; False if it was not a member."""
    removed = delete(TOPIC_MEMBERS).where(
        TOPIC_MEMBERS.c.topic == topic, TOPIC_MEMBERS.c.recipient_id == recipient_id
    )
    return db.scalar(removed.returning(TOPIC_MEMBERS.c.recipient_id)) is not None


def members(db: Session, topic: str, after: str | None = None, limit: int = 1000) -> list[str]:
    """Up to ``limit`` recipient ids of ``topic`` after ``after``, in id order.

    For walking a whole topic (routing its fan-out): each page is a range read
    of the primary key (topic, recipient_id), so page 100 costs what page 1
    does. Pass the last id of a page as ``after`` for the next; fewer than
    ``limit`` ids means the topic is done.
    """
    query = select(TOPIC_MEMBERS.c.recipient_id).where(TOPIC_MEMBERS.c.topic == topic)
    if after is not None:
        query = query.where(TOPIC_MEMBERS.c.recipient_id > after)
    return list(db.scalars(query.order_by(TOPIC_MEMBERS.c.recipient_id).limit(limit)))


def members_by_age(
    db: Session, topic: str, after: tuple[datetime, str] | None = None, limit: int = 100
) -> list[Member]:
    """Up to ``limit`` members of ``topic`` after ``after``, oldest first (the API's order).

    Ordered by (created_at, recipient_id), which stays stable while members
    come and go; ``after`` is the last member's pair of the previous page.
    """
    query = select(TOPIC_MEMBERS.c.recipient_id, TOPIC_MEMBERS.c.created_at).where(
        TOPIC_MEMBERS.c.topic == topic
    )
    if after is not None:
        query = query.where(
            tuple_(TOPIC_MEMBERS.c.created_at, TOPIC_MEMBERS.c.recipient_id)
            > tuple_(literal(after[0], TOPIC_MEMBERS.c.created_at.type), literal(after[1]))
        )
    query = query.order_by(TOPIC_MEMBERS.c.created_at, TOPIC_MEMBERS.c.recipient_id)
    return [Member(row.recipient_id, row.created_at) for row in db.execute(query.limit(limit))]


def _complete(document: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a recipient, a cleared one at its empty value (the columns' NOT NULL)."""
    full = {name: document.get(name) for name in FIELDS}
    for name in _OBJECTS:
        if full[name] is None:
            full[name] = {}
    return full


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _dialect(db: Session) -> str:
    return db.bind.dialect.name if db.bind else "sqlite"
