"""Stored API keys: only their hashes are kept."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import ApiKey


def add_api_key(db: Session, name: str, key_hash: str) -> None:
    db.add(ApiKey(name=name, key_hash=key_hash))


def api_key_exists(db: Session, key_hash: str) -> bool:
    return db.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash)) is not None
