"""Engines and sessions: one engine per database URL per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from hub.store.models import utcnow

MIGRATIONS = Path(__file__).parent / "migrations"


@cache
def engine(url: str) -> Engine:
    """The process's engine for ``url``; SQLite gets WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    sqlite = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(sqlite, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API write while workers read; busy_timeout makes the
        # API, workers and beat wait for each other's locks instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return sqlite


@cache
def _sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine(url), expire_on_commit=False)


@contextmanager
def session(url: str) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with _sessions(url)() as db, db.begin():
        yield db


def migrate(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "head")


def seconds_ago(seconds: float) -> datetime:
    """The moment ``seconds`` before now (after it, when negative), in UTC."""
    return utcnow() - timedelta(seconds=seconds)
