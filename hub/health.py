"""Is the hub able to work: the checks behind ``/readyz`` and ``hub status``.

Four checks, run side by side, each cut after :data:`CHECK_TIMEOUT_S` so a
dead broker or database is reported within about a second instead of
hanging the probe:

- ``database``: the store answers a query;
- ``migrations``: its schema is at the newest Alembic revision;
- ``broker``: the broker accepts a connection (Redis ``PING``, AMQP connect);
- ``workers``: some worker wrote a heartbeat in the last :data:`STALE_AFTER_S`.

Heartbeats are the hub's own (Celery's need task events, which are off): each
worker's main process writes one every ``worker.heartbeat`` (:class:`Heartbeat`)
under ``hub:heartbeat:<node>`` in Redis where there is one (``redis_url``, or
a Redis broker), else as a row of ``worker_heartbeats`` in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import redis
from sqlalchemy import delete, inspect, select, text

from hub import queues
from hub.embedded import running_url
from hub.settings import Settings
from hub.store.db import MIGRATIONS, engine, session
from hub.store.models import WorkerHeartbeat

log = logging.getLogger(__name__)

# A worker is alive while its last heartbeat is younger than this.
STALE_AFTER_S = 30.0
# Each check's answer is awaited this long (a connection refused is noticed at once).
CHECK_TIMEOUT_S = 1.5
# A heartbeat key outlives staleness so `hub status` can say when a worker was last seen.
HEARTBEAT_TTL_S = 600
HEARTBEAT_PREFIX = "hub:heartbeat:"


@dataclass(frozen=True, slots=True)
class Check:
    """One check's verdict: ``ok`` or ``down``, with a sentence for people."""

    status: Literal["ok", "down"]
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Beat:
    """A worker's last heartbeat."""

    node: str
    host: str
    pid: int
    queues: str
    at: float  # seconds since the epoch

    def age_s(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - self.at


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "checks": {name: asdict(check) for name, check in self.checks.items()},
        }


def broker_url(settings: Settings) -> str:
    """The broker this deployment uses: the setting, else the embedded one of ``hub up``."""
    return settings.broker_url or running_url(settings.var_dir) or ""


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def heartbeat_redis_url(settings: Settings) -> str:
    """Where heartbeats live: ``redis_url``, else a Redis broker; empty: the store."""
    url = settings.redis_url or broker_url(settings)
    return url if _is_redis(url) else ""


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
    )


# ---------------------------------------------------------------- heartbeats


def write_heartbeat(settings: Settings, beat: Beat) -> None:
    """Store ``beat``: a Redis key with a TTL, or the node's row in the store."""
    if url := heartbeat_redis_url(settings):
        with _redis(url) as client:
            client.set(HEARTBEAT_PREFIX + beat.node, json.dumps(asdict(beat)), ex=HEARTBEAT_TTL_S)
        return
    at = datetime.fromtimestamp(beat.at, UTC)
    with session(settings.resolved_database_url) as db:
        db.merge(
            WorkerHeartbeat(node=beat.node, host=beat.host, pid=beat.pid, queues=beat.queues, at=at)
        )


def forget_heartbeat(settings: Settings, node: str) -> None:
    """A worker that stops cleanly takes its heartbeat with it."""
    if url := heartbeat_redis_url(settings):
        with _redis(url) as client:
            client.delete(HEARTBEAT_PREFIX + node)
        return
    with session(settings.resolved_database_url) as db:
        db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.node == node))


def heartbeats(settings: Settings) -> list[Beat]:
    """Every worker heartbeat still kept, newest first."""
    beats: list[Beat] = []
    if url := heartbeat_redis_url(settings):
        with _redis(url) as client:
            keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=1000))
            values = client.mget(keys) if keys else []
        beats = [Beat(**json.loads(value)) for value in values if value]
    else:
        with session(settings.resolved_database_url) as db:
            rows = db.scalars(select(WorkerHeartbeat)).all()
        beats = [Beat(r.node, r.host, r.pid, r.queues, r.at.timestamp()) for r in rows]
    return sorted(beats, key=lambda beat: -beat.at)


class Heartbeat:
    """A worker main process's heartbeat: written now, then every ``interval_s`` from a thread."""

    def __init__(self, settings: Settings, node: str, consumes: Iterable[str]) -> None:
        self._settings = settings
        self._interval_s = settings.worker.heartbeat_s
        self.node = node
        self._queues = ",".join(consumes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-heartbeat", daemon=True)

    def beat(self) -> Beat:
        import os

        beat = Beat(self.node, socket.gethostname(), os.getpid(), self._queues, time.time())
        write_heartbeat(self._settings, beat)
        return beat

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget_heartbeat(self._settings, self.node)
        except Exception as exc:  # the broker may be what is going away
            log.warning("could not remove the heartbeat of %s: %s", self.node, exc)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
            except Exception as exc:
                # Logged once per outage: /readyz says the rest.
                if not failing:
                    log.warning("worker heartbeat not written: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("worker heartbeat written again")
                failing = False
            if self._stop.wait(self._interval_s):
                return


# ---------------------------------------------------------------- checks


def check_database(settings: Settings) -> Check:
    with engine(settings.resolved_database_url).connect() as connection:
        connection.execute(text("SELECT 1"))
    return Check("ok", "answers")


@cache
def alembic_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def check_migrations(settings: Settings) -> Check:
    head = alembic_head()
    with engine(settings.resolved_database_url).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return Check("down", f"no schema yet, code expects {head}: run `hub db upgrade`")
        query = text("SELECT version_num FROM alembic_version")
        current = connection.execute(query).scalars().all()
    if list(current) == [head]:
        return Check("ok", f"at head ({head})")
    at = ", ".join(current) or "none"
    return Check("down", f"schema at {at}, code expects {head}: run `hub db upgrade`")


def check_broker(settings: Settings) -> Check:
    url = broker_url(settings)
    if not url:
        return Check("down", "no broker_url set and no embedded Redis running")
    if _is_redis(url):
        with _redis(url) as client:
            client.ping()
        return Check("ok", "answers PING")
    from kombu.connection import Connection

    with Connection(url, connect_timeout=CHECK_TIMEOUT_S) as connection:  # type: ignore[no-untyped-call]
        connection.ensure_connection(max_retries=1)
    return Check("ok", "accepts a connection")


def check_workers(settings: Settings, host: str | None = None) -> Check:
    """At least one worker (of ``host``, if given) beat within :data:`STALE_AFTER_S`."""
    beats = [beat for beat in heartbeats(settings) if host is None or beat.host == host]
    now = time.time()
    alive = [beat for beat in beats if beat.age_s(now) < STALE_AFTER_S]
    if alive:
        names = ", ".join(beat.node for beat in alive)
        return Check("ok", f"{len(alive)} alive: {names}")
    where = f" on {host}" if host else ""
    if beats:
        last = beats[0]
        return Check(
            "down",
            f"no heartbeat{where} in the last {STALE_AFTER_S:.0f}s "
            f"(last: {last.node}, {last.age_s(now):.0f}s ago)",
        )
    return Check("down", f"no worker{where} has sent a heartbeat")


def describe(exc: BaseException) -> str:
    """An exception in one line: SQLAlchemy's own text runs on with the statement."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def guarded(check: Callable[[], Check]) -> Check:
    """``check()``, or a ``down`` verdict naming the exception it raised."""
    return _guarded(check)()


_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-health")


def _guarded(check: Callable[[], Check]) -> Callable[[], Check]:
    def run() -> Check:
        try:
            return check()
        except Exception as exc:
            return Check("down", describe(exc))

    return run


def readiness(settings: Settings) -> Readiness:
    """Every check, side by side; one that takes longer than :data:`CHECK_TIMEOUT_S` is down."""
    checks: dict[str, Callable[[], Check]] = {
        "database": lambda: check_database(settings),
        "broker": lambda: check_broker(settings),
        "migrations": lambda: check_migrations(settings),
        "workers": lambda: check_workers(settings),
    }
    futures = {name: _pool.submit(_guarded(check)) for name, check in checks.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_S + 0.5
    results: dict[str, Check] = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            results[name] = Check("down", f"no answer within {CHECK_TIMEOUT_S}s")
    return Readiness(results)


# ---------------------------------------------------------------- queues


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each of the hub's queues, read from the broker now."""
    url = broker_url(settings)
    names = queues.all_queues(settings.channel_classes)
    if not url:
        return {}
    if _is_redis(url):
        return _redis_depths(url, names)
    return _amqp_depths(url, names)


def _redis_depths(url: str, names: Iterable[str]) -> dict[str, int]:
    # Kombu keeps a queue's messages of broker priority p under "<queue>\x06\x16<p>";
    # the hub sends none, but another app's send_task may.
    from kombu.transport.redis import Channel

    names = list(names)
    steps = Channel.priority_steps
    with _redis(url) as client:
        pipe = client.pipeline(transaction=False)
        for name in names:
            for step in steps:
                pipe.llen(f"{name}{Channel.sep}{step}" if step else name)
        lengths = pipe.execute()
    per = len(steps)
    return {name: sum(lengths[i * per : (i + 1) * per]) for i, name in enumerate(names)}


def _amqp_depths(url: str, names: Iterable[str]) -> dict[str, int]:
    from kombu.connection import Connection

    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=CHECK_TIMEOUT_S) as connection:  # type: ignore[no-untyped-call]
        for name in names:
            channel = connection.channel()
            try:
                # Passive: reads the count, never creates a queue no worker declared.
                _, count, _ = channel.queue_declare(queue=name, passive=True)
                depths[name] = int(count)
            except Exception:  # not declared yet: nothing waits in it
                depths[name] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def oldest_queued_s(settings: Settings) -> float:
    """Age in seconds of the oldest notification still ``queued`` (0 with none)."""
    from sqlalchemy import func

    from hub.store.models import Notification, NotificationStatus, utcnow

    with session(settings.resolved_database_url) as db:
        query = select(func.min(Notification.created_at))
        oldest = db.scalar(query.where(Notification.status == NotificationStatus.QUEUED))
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max((utcnow() - oldest).total_seconds(), 0.0)
