"""API keys: shown once when created, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy.exc import IntegrityError

from hub.errors import NameTaken
from hub.store import keys as stored_keys
from hub.store.db import session

PREFIX = "hub_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(database_url: str, name: str) -> str:
    """Create a key named ``name`` and return it; only its hash is kept."""
    key = PREFIX + secrets.token_urlsafe(32)
    try:
        with session(database_url) as db:
            stored_keys.add_api_key(db, name, hash_key(key))
    except IntegrityError as exc:
        raise NameTaken(f"an API key named {name!r} already exists") from exc
    return key


def is_valid(database_url: str, key: str) -> bool:
    with session(database_url) as db:
        return stored_keys.api_key_exists(db, hash_key(key))
