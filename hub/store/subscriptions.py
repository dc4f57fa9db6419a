"""Stored subscriptions, and the version counter that tells every worker they changed.

Every change goes with a bump of ``ConfigVersion(kind="subscriptions")`` in
the same transaction, so a worker that reads the version before routing sees
the change with the very next event (see :mod:`hub.routing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.store.models import ConfigVersion, StoredSubscription, utcnow

KIND = "subscriptions"
# The table itself, for the Core statement routing runs before every batch.
VERSIONS: Table = ConfigVersion.__table__  # type: ignore[assignment]
_VERSION = select(VERSIONS.c.version).where(VERSIONS.c.kind == KIND)


def version(db: Session) -> int:
    """The subscriptions' version: 0 until the first change."""
    # On the session's connection: a third of the ORM's cost, on routing's hot path.
    found = db.connection().scalar(_VERSION)
    return int(found or 0)


def definitions(db: Session) -> list[tuple[str, dict[str, Any]]]:
    """Every stored subscription's name and definition, oldest first."""
    query = select(StoredSubscription.name, StoredSubscription.definition).order_by(
        StoredSubscription.created_at, StoredSubscription.name
    )
    return [(row.name, row.definition) for row in db.execute(query)]


def subscription(db: Session, name: str) -> StoredSubscription | None:
    """The stored subscription named ``name``, if there is one."""
    return db.get(StoredSubscription, name)


def page(
    db: Session, after: tuple[datetime, str] | None, limit: int
) -> Sequence[StoredSubscription]:
    """Up to ``limit`` subscriptions in ``(created_at, name)`` order, after that key if given."""
    query = select(StoredSubscription).order_by(
        StoredSubscription.created_at, StoredSubscription.name
    )
    if after is not None:
        created_at, name = after
        query = query.where(
            or_(
                StoredSubscription.created_at > created_at,
                and_(StoredSubscription.created_at == created_at, StoredSubscription.name > name),
            )
        )
    return db.scalars(query.limit(limit)).all()


def add(db: Session, name: str, definition: dict[str, Any]) -> StoredSubscription:
    """Store a new subscription; :class:`IntegrityError` when the name is taken."""
    now = utcnow()
    row = StoredSubscription(name=name, definition=definition, created_at=now, updated_at=now)
    db.add(row)
    db.flush()  # a taken name fails here, before the version moves
    bump_version(db)
    return row


def replace(db: Session, name: str, definition: dict[str, Any]) -> StoredSubscription | None:
    """Replace a stored subscription's definition; None when there is none of that name."""
    row = db.get(StoredSubscription, name, with_for_update=True)
    if row is None:
        return None
    row.definition = definition
    row.updated_at = utcnow()
    bump_version(db)
    return row


def remove(db: Session, name: str) -> bool:
    """Delete a stored subscription; False when there is none of that name."""
    deleted = db.execute(delete(StoredSubscription).where(StoredSubscription.name == name))
    if not deleted.rowcount:  # type: ignore[attr-defined]
        return False
    bump_version(db)
    return True


def bump_version(db: Session) -> int:
    """Move the subscriptions' version on, in ``db``'s transaction; the new version."""
    if (bumped := _increment(db)) is not None:
        return bumped
    try:
        with db.begin_nested():
            db.add(ConfigVersion(kind=KIND, version=1, updated_at=utcnow()))
        return 1
    except IntegrityError:
        # A concurrent first change made the row: count this one after it.
        bumped = _increment(db)
        assert bumped is not None
        return bumped


def _increment(db: Session) -> int | None:
    statement = (
        update(VERSIONS)
        .where(VERSIONS.c.kind == KIND)
        .values(version=VERSIONS.c.version + 1, updated_at=utcnow())
        .returning(VERSIONS.c.version)
    )
    found = db.execute(statement).scalar()
    return None if found is None else int(found)
