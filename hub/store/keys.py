"""Stored API keys: only their hashes are kept, with their scopes and lifetime."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import ApiKey


def add_api_key(db: Session, key: ApiKey) -> None:
    db.add(key)
    db.flush()  # a taken name fails here, inside the caller's transaction


def api_key_by_hash(db: Session, key_hash: str) -> ApiKey | None:
    return db.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def live_api_key(db: Session, name: str) -> ApiKey | None:
    """The key named ``name`` that is not revoked (expired or not), locked for a change."""
    query = select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
    return db.scalar(query.with_for_update())


def api_keys(db: Session) -> Sequence[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    return db.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
