"""Stored templates and their versions.

A version is written once and never changed; a template's ``active_version``
says which one renders. Saving, publishing a draft and rolling back move it in
one transaction, and delivery reads it when it claims a batch, so no worker
renders a version older than the last save before its claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from hub.store.models import Notification, Template, TemplateVersion, utcnow
from hub.template_files import FileTemplate

TEMPLATES: Table = Template.__table__  # type: ignore[assignment]
_ACTIVE = select(TEMPLATES.c.name, TEMPLATES.c.active_version)


def active_versions(db: Session) -> dict[str, int]:
    """Every template's active version, by name: one small query per delivery batch."""
    return {name: version for name, version in db.connection().execute(_ACTIVE)}


def contents(
    db: Session, wanted: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The contents of the versions ``wanted``, by ``(name, version)``."""
    if not wanted:
        return {}
    keys = [and_(TemplateVersion.name == n, TemplateVersion.version == v) for n, v in wanted]
    query = select(TemplateVersion.name, TemplateVersion.version, TemplateVersion.content)
    return {(row.name, row.version): row.content for row in db.execute(query.where(or_(*keys)))}


def template(db: Session, name: str) -> Template | None:
    return db.get(Template, name)


def version(db: Session, name: str, number: int) -> TemplateVersion | None:
    return db.get(TemplateVersion, (name, number))


def page(db: Session, after: tuple[datetime, str] | None, limit: int) -> Sequence[Template]:
    """Up to ``limit`` templates in ``(created_at, name)`` order, after that key if given."""
    query = select(Template).order_by(Template.created_at, Template.name)
    if after is not None:
        at, name = after
        query = query.where(
            or_(Template.created_at > at, and_(Template.created_at == at, Template.name > name))
        )
    return db.scalars(query.limit(limit)).all()


def versions(db: Session, name: str, before: int | None, limit: int) -> Sequence[TemplateVersion]:
    """Up to ``limit`` versions of ``name``, newest first, below ``before`` if given."""
    query = select(TemplateVersion).where(TemplateVersion.name == name)
    if before is not None:
        query = query.where(TemplateVersion.version < before)
    return db.scalars(query.order_by(TemplateVersion.version.desc()).limit(limit)).all()


def add_version(
    db: Session,
    name: str,
    content: dict[str, Any],
    *,
    event_type: str | None,
    author: str | None,
    comment: str,
    draft: bool,
    source: str,
) -> TemplateVersion:
    """Write the next version of ``name``; unless a draft, it becomes the active one.

    Two saves racing for one number: the second fails on the primary key
    (IntegrityError) instead of overwriting; the caller retries.
    """
    now = utcnow()
    latest = db.scalar(
        select(func.max(TemplateVersion.version)).where(TemplateVersion.name == name)
    )
    saved = TemplateVersion(
        name=name,
        version=(latest or 0) + 1,
        content=content,
        event_type=event_type,
        author=author,
        comment=comment,
        draft=draft,
        source=source,
        created_at=now,
    )
    db.add(saved)
    row = db.get(Template, name, with_for_update=True)
    if row is None:
        # A template's first version is live (the API refuses it as a draft).
        row = Template(name=name, event_type=event_type, created_at=now, updated_at=now)
        row.active_version = saved.version
        db.add(row)
    elif not draft:
        row.active_version, row.event_type, row.updated_at = saved.version, event_type, now
    db.flush()
    return saved


def publish(db: Session, name: str, number: int) -> bool:
    """Make version ``number`` of ``name`` the active one; False if there is no such version."""
    found = db.get(TemplateVersion, (name, number))
    if found is None:
        return False
    found.draft = False
    db.execute(
        update(Template)
        .where(Template.name == name)
        .values(active_version=number, event_type=found.event_type, updated_at=utcnow())
    )
    return True


def sync_files(db: Session, found: dict[str, FileTemplate]) -> list[str]:
    """Import template files, a new version only where a file changed; the names imported.

    A template edited through the API keeps its edit until its files change
    again: only the files' own hash is compared, never the active content.
    """
    hashes = {
        name: digest for name, digest in db.execute(select(Template.name, Template.file_hash))
    }
    imported = []
    for name, files in sorted(found.items()):
        digest = files.digest
        if name in hashes and hashes[name] == digest:
            continue
        add_version(
            db,
            name,
            files.content,
            event_type=files.event_type,
            author="files",
            comment="imported from the template files",
            draft=False,
            source="files",
        )
        db.execute(update(Template).where(Template.name == name).values(file_hash=digest))
        imported.append(name)
    return imported


def record_versions(db: Session, rendered: dict[int, list[str]]) -> None:
    """Note which template version rendered each notification: ``{version: [ids]}``."""
    for number, ids in rendered.items():
        db.execute(
            update(Notification).where(Notification.id.in_(ids)).values(template_version=number)
        )
