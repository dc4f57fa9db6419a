"""One beat per deployment: beat runs only while it holds a lock; a second one waits as standby.

Where the lock lives, in order:

- **Redis**, wherever the hub has one (``redis_url``, else the broker when it
  is Redis, else ``hub up``'s embedded one): ``SET key token NX PX ttl``,
  renewed every third of the TTL by a compare-and-expire script, so the key
  of a beat that died expires within ``beat.lock_ttl``.
- **PostgreSQL**, otherwise, when the store is PostgreSQL: a session
  advisory lock (``pg_try_advisory_lock``) on a connection of its own. The
  server lets go of it when that connection ends; TCP keepalives make it
  notice a vanished machine within about ``beat.lock_ttl``.
- **A file** under ``var_dir`` (``flock``), with SQLite and no Redis: that
  deployment is one machine, and the kernel lets go of it when the process dies.

:func:`run_locked` wraps beat: it takes the lock (or says another beat holds
it and keeps trying, as standby), starts beat, renews the lock in a thread,
and stops beat if the lock is lost, going back to standby. A standby takes
over within ``lock_ttl`` plus a sixth of it after the running beat died.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import redis
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from hub.embedded import running_url
from hub.settings import Settings

log = logging.getLogger(__name__)

REDIS_KEY = "hub:beat-lock"
# The advisory lock's key: any 64-bit number no other user of the database picks.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"hub.beat").digest()[:8], "big", signed=True)

# Set the key's expiry only while it still holds our token.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"  # noqa: E501
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"  # noqa: E501


class BeatLock(ABC):
    """A lock at most one process of a deployment holds; never blocks."""

    where: str  # for messages: "Redis at redis://host:6379/0"

    @abstractmethod
    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); False when another holds it."""

    @abstractmethod
    def renew(self) -> bool:
        """Keep holding it; False when it is known lost. May raise when that is unknown."""

    @abstractmethod
    def release(self) -> None:
        """Let go of it if held; never raises."""


class RedisLock(BeatLock):
    def __init__(self, url: str, ttl_s: float, key: str = REDIS_KEY) -> None:
        self.where = f"Redis at {_without_password(url)}"
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._key = key
        self._token = uuid.uuid4().hex

    def acquire(self) -> bool:
        if self._client.set(self._key, self._token, nx=True, px=self._ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        return bool(self._client.eval(_RENEW, 1, self._key, self._token, str(self._ttl_ms)))

    def release(self) -> None:
        try:
            self._client.eval(_RELEASE, 1, self._key, self._token)
        except redis.RedisError as exc:
            log.warning("could not release the beat lock in %s (it expires): %s", self.where, exc)


class PostgresLock(BeatLock):
    def __init__(self, url: str, ttl_s: float, key: int = ADVISORY_KEY) -> None:
        self.where = f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)}"
        self._engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._key = key
        # The server drops a vanished holder's session (and lock) within about the TTL.
        self._keepalive = {
            "tcp_keepalives_idle": max(int(ttl_s / 3), 1),
            "tcp_keepalives_interval": max(int(ttl_s / 9), 1),
            "tcp_keepalives_count": 3,
        }
        self._connection: Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        if self._held:
            return self.renew()
        if self._connection is None:
            self._connection = self._engine.connect()
            for name, value in self._keepalive.items():
                self._connection.execute(text(f"SET {name} = {int(value)}"))
        query = text("SELECT pg_try_advisory_lock(:key)")
        self._held = bool(self._connection.execute(query, {"key": self._key}).scalar())
        return self._held

    def renew(self) -> bool:
        if not self._held or self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
        except Exception as exc:
            # The session is gone, and its lock with it.
            log.warning("lost the connection holding the beat lock: %s", exc)
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._connection is not None and self._held:
            try:
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
                )
            except Exception as exc:
                log.warning("could not release the beat lock (its session ends): %s", exc)
        self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._connection is not None:
            # A broken connection may fail to close; it is gone either way.
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


class FileLock(BeatLock):
    def __init__(self, path: Path) -> None:
        self.where = f"file {path}"
        self._path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def renew(self) -> bool:
        return self._file is not None  # the kernel holds it until we let go or die

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def beat_lock(settings: Settings) -> BeatLock:
    """The deployment's lock: in Redis if there is one, else PostgreSQL, else a file."""
    ttl_s = settings.beat.lock_ttl_s
    redis_url = settings.rate_limit_redis_url or (
        running_url(settings.var_dir) if not settings.broker_url else ""
    )
    if redis_url:
        return RedisLock(redis_url, ttl_s)
    database_url = settings.resolved_database_url
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresLock(database_url, ttl_s)
    return FileLock(settings.var_dir / "beat.lock")


# Runs beat until it ends; it hands the callable that stops beat (from
# another thread) to its argument, once beat can be stopped.
StartBeat = Callable[[Callable[[Callable[[], None]], None]], None]


def run_locked(
    lock: BeatLock,
    ttl_s: float,
    start_beat: StartBeat,
    say: Callable[[str], None] = print,
) -> None:
    """Run beat while holding ``lock``; as standby while another beat holds it.

    Returns when beat ends for any reason but a lost lock (a signal,
    Ctrl-C); after a lost lock it goes back to standby.
    """
    poll_s = ttl_s / 6
    standby = False
    while True:
        try:
            held = lock.acquire()
        except Exception as exc:
            held = False
            log.warning("could not reach the beat lock in %s: %s", lock.where, exc)
        if not held:
            if not standby:
                say(f"another beat holds the lock ({lock.where}): waiting as standby")
                standby = True
            time.sleep(poll_s)
            continue
        standby = False
        say(f"holding the beat lock ({lock.where}): starting beat")
        lost = threading.Event()
        try:
            _run_holding(lock, ttl_s, start_beat, lost)
        finally:
            lock.release()
        if not lost.is_set():
            return
        say(f"lost the beat lock ({lock.where}): beat stopped, waiting as standby")
        standby = True


def _run_holding(
    lock: BeatLock,
    ttl_s: float,
    start_beat: StartBeat,
    lost: threading.Event,
) -> None:
    """Run beat with a thread renewing the lock; set ``lost`` and stop beat if it goes."""
    done = threading.Event()
    stoppers: list[Callable[[], None]] = []
    guard = threading.Lock()

    def on_stop(stop: Callable[[], None]) -> None:
        with guard:
            stoppers.append(stop)
            if lost.is_set():  # lost before beat could be stopped
                stop()

    def renew() -> None:
        every_s = ttl_s / 3
        renewed_at = time.monotonic()
        while not done.wait(every_s):
            try:
                if lock.renew():
                    renewed_at = time.monotonic()
                    continue
            except Exception as exc:
                log.warning("could not renew the beat lock in %s: %s", lock.where, exc)
                # Unknown yet: held until it may have expired.
                if time.monotonic() - renewed_at < ttl_s - every_s:
                    continue
            with guard:
                lost.set()
                for stop in stoppers:
                    stop()
            return

    renewer = threading.Thread(target=renew, name="beat-lock", daemon=True)
    renewer.start()
    try:
        start_beat(on_stop)
    finally:
        done.set()
        renewer.join(ttl_s)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()
