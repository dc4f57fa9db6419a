"""How a running process follows `hub reload`: a version number in the store, not a signal.

``hub reload`` bumps the settings' version in the store (:mod:`hub.store.config`).
Each worker process (in :func:`hub.runtime.get_runtime`) and each API process
(before a request) reads it at most once every :data:`CHECK_INTERVAL_S`, one
primary-key SELECT; when it moved, the process loads settings and templates
afresh, so its next task routes with the new subscriptions and renders with
the new templates. ``hub reload`` returns only after that interval, so every
task or request begun after it sees the new settings, on every machine.

Keys that need a restart (:data:`hub.settings.snapshot.NEEDS_RESTART`) keep,
in a reloading process, the values it started with: a worker must not move
to another store or broker half-way while its peers stay.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from hub import events
from hub.settings import Settings, load_settings, use_settings
from hub.settings.snapshot import restart_fields, snapshot
from hub.store import config
from hub.store.db import engine, session

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class VersionWatch:
    """The settings' version this process runs, and a throttled look at the store's."""

    def __init__(self, database_url: str, interval_s: float = CHECK_INTERVAL_S) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.version: int | None = None
        self._due = 0.0
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """Whether a look at the store is due; the caller that gets True makes it."""
        now = time.monotonic()
        if now < self._due:  # the hot path: one clock read, no lock
            return False
        with self._lock:
            if now < self._due:
                return False
            self._due = now + self.interval_s
            return True

    def stored(self) -> int | None:
        """The store's version now; None when the store cannot say (tried again later)."""
        try:
            with engine(self.database_url).connect() as connection:
                return config.version(connection)
        except SQLAlchemyError as exc:
            log.warning("cannot read the settings version (reloads wait): %s", exc)
            return None

    def moved(self) -> int | None:
        """The store's version if a look is due and it differs from :attr:`version`."""
        if not self.claim():
            return None
        found = self.stored()
        return None if found is None or found == self.version else found


def fresh_settings(running: Settings) -> Settings:
    """Settings as the files and env hold them now, less what needs a restart.

    Raises :class:`~hub.errors.ConfigError` for a broken file, like start-up.
    """
    loaded = load_settings()
    return loaded.model_copy(update={name: getattr(running, name) for name in restart_fields()})


def adopt(settings: Settings) -> None:
    """Make ``settings`` this process's: :func:`hub.settings.get_settings` and the event catalog."""
    use_settings(settings)
    events.catalog.cache_clear()


def record_first_snapshot(settings: Settings) -> None:
    """Store what this process started with, unless a snapshot is stored already.

    So the first ``hub reload`` has something to compare with. The version
    stays: every process already runs these settings.
    """
    try:
        with session(settings.resolved_database_url) as db:
            if config.record_first(db, snapshot(settings, settings.all_template_dirs)):
                log.info("settings snapshot recorded (version 0)")
    except SQLAlchemyError as exc:
        log.warning("settings snapshot not recorded: %s", exc)
