"""The settings' version and snapshot: how `hub reload` tells every process, with no signal.

``hub reload`` bumps ``ConfigVersion(kind="settings")`` and stores beside it a
snapshot of what it loaded (:mod:`hub.settings.snapshot`), which the next
``hub reload`` or ``hub check`` compares with. Each process reads the version
(one primary-key SELECT) at most once a second and reloads when it moved
(:mod:`hub.reloads`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.store.models import ConfigVersion, utcnow

KIND = "settings"
VERSIONS: Table = ConfigVersion.__table__  # type: ignore[assignment]
_VERSION = select(VERSIONS.c.version).where(VERSIONS.c.kind == KIND)


def version(connection: Connection) -> int:
    """The settings' version: 0 until the first ``hub reload``."""
    # A Core statement on a bare connection: processes run it once a second.
    return int(connection.scalar(_VERSION) or 0)


def stored(db: Session) -> tuple[int, dict[str, Any] | None]:
    """The settings' version and the snapshot stored with it (None: none yet)."""
    query = select(VERSIONS.c.version, VERSIONS.c.snapshot).where(VERSIONS.c.kind == KIND)
    row = db.execute(query).first()
    return (0, None) if row is None else (int(row.version), row.snapshot)


def bump(db: Session, snapshot: dict[str, Any]) -> int:
    """Move the version on with ``snapshot``, in ``db``'s transaction; the new version."""
    statement = (
        update(VERSIONS)
        .where(VERSIONS.c.kind == KIND)
        .values(version=VERSIONS.c.version + 1, snapshot=snapshot, updated_at=utcnow())
        .returning(VERSIONS.c.version)
    )
    if (found := db.execute(statement).scalar()) is not None:
        return int(found)
    if _insert(db, 1, snapshot):
        return 1
    # A concurrent first reload made the row: count this one after it.
    return int(db.execute(statement).scalar_one())


def record_first(db: Session, snapshot: dict[str, Any]) -> bool:
    """Store ``snapshot`` as version 0 when nothing is stored yet; whether it was.

    The version does not move: the processes already run these settings, so
    none needs to reload; the first ``hub reload`` then has something to
    compare with.
    """
    return _insert(db, 0, snapshot)


def _insert(db: Session, at: int, snapshot: dict[str, Any]) -> bool:
    """Create the row; False when it exists already (another process made it first)."""
    try:
        with db.begin_nested():
            db.execute(
                insert(VERSIONS).values(
                    kind=KIND, version=at, snapshot=snapshot, updated_at=utcnow()
                )
            )
    except IntegrityError:
        return False
    return True
