"""Fixtures that start the real thing: Redis, an SMTP server, the hub's worker and API.

Services this machine may lack (PostgreSQL) are skipped with a reason, unless
HUB_TEST_REQUIRE_SERVICES=1 (set by .ci/run) turns such skips into failures.
Redis is never skipped: without HUB_TEST_REDIS_URL the embedded one starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit as make_url_parts

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hub.embedded import EmbeddedRedis, _free_port
from hub.settings import bundled_path
from hub.store.db import engine, migrate
from tests.smtp_sink import SmtpSink, start_sink

TEST_SETTINGS = """
[events."test.broken"]
description = "Routes to a template that uses a variable the event lacks."

[[subscriptions]]
name = "broken-template"
event = "test.broken"
channel = "email"
to = "{{ data.email }}"
template = "broken"
"""

# The bundled failure subscriptions group their alerts (hub.alerts), sent by
# beat's ticks. Stacks that check how one alert travels through its channels
# add these: the same alerts, one per event, as users may also configure.
EACH_ALERT = """
[[subscriptions]]
name = "task-failed-each"
event = "task.failed"
channel = "alert"
to = "oncall"
template = "task.failed"

[[subscriptions]]
name = "notification-failed-each"
event = "notification.failed"
channel = "alert"
to = "oncall"
template = "notification.failed"
"""

TERMINAL = {
    "sent",
    "failed",
    "suppressed",
    "unknown",
    "delivered",
    "undelivered",
    "expired",
    "digested",
}


def other_redis_db(url: str, offset: int = 1) -> str:
    """The same Redis server, another (flushed) database: a second stack's own queues.

    ``offset`` 2 gives a third stack its own beside a second one still running.
    """
    parsed = make_url_parts(url)
    db = (int(parsed.path.strip("/") or 0) + offset) % 16
    other = parsed._replace(path=f"/{db}").geturl()
    redis.Redis.from_url(other).flushdb()
    return other


def missing_service(reason: str) -> None:
    """Skip for a service this machine lacks; fail instead where CI requires it."""
    if os.environ.get("HUB_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (HUB_TEST_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'hub.db'}"
        migrate(url)
        yield url
        return
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database on HUB_TEST_DATABASE_URL's server, dropped after."""
    admin_url = os.environ.get("HUB_TEST_DATABASE_URL")
    if not admin_url:
        missing_service(
            "PostgreSQL variant needs HUB_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test)"
        )
    assert admin_url is not None
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HUB_TEST_REDIS_URL (a database the tests may flush), else an embedded redis-server."""
    if url := os.environ.get("HUB_TEST_REDIS_URL"):
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpSink]:
    controller, sink = start_sink()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


@dataclass
class Stack:
    """A running hub: API and worker processes sharing one settings environment."""

    base_url: str
    api_key: str
    database_url: str
    env: dict[str, str]
    home: Path

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key or self.api_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)

    def publish(self, event_type: str, data: dict[str, Any], id: str | None = None) -> str:
        body: dict[str, Any] = {"type": event_type, "data": data}
        if id:
            body["id"] = id
        with self.client() as http:
            response = http.post("/v1/events", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def event(self, event_id: str) -> dict[str, Any]:
        with self.client() as http:
            response = http.get(f"/v1/events/{event_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def settled(self, event_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The event once it is routed (or completed) and every notification is final."""

        def done() -> dict[str, Any] | None:
            event = self.event(event_id)
            routed = event["status"] in ("routed", "completed")
            final = all(n["status"] in TERMINAL for n in event["notifications"])
            return event if routed and final else None

        return wait_until(done, timeout_s, f"event {event_id} to settle")  # type: ignore[no-any-return]


def run_hub(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``hub`` command against the stack, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def hub_env(
    home: Path, broker_url: str, smtp_port: int, database_url: str, extra_settings: str = ""
) -> dict[str, str]:
    """The environment every hub process of a test stack shares.

    Its settings file is the bundled one, the tests' additions, and ``extra_settings``.
    """
    settings = home / "settings.toml"
    settings.write_text(bundled_path("settings.toml").read_text() + TEST_SETTINGS + extra_settings)
    broken = home / "templates" / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "subject.txt").write_text("Broken")
    (broken / "body.txt").write_text("Hello {{ data.nope }}")
    return {
        "HUB_SETTINGS": str(settings),
        "HUB_BROKER_URL": broker_url,
        "HUB_DATABASE_URL": database_url,
        "HUB_VAR_DIR": str(home / "var"),
        "HUB_TEMPLATE_DIRS": json.dumps([str(home / "templates")]),
        "HUB_CHANNELS__EMAIL__HOST": "127.0.0.1",
        "HUB_CHANNELS__EMAIL__PORT": str(smtp_port),
        "HUB_DELIVERY__MAX_ATTEMPTS": "3",
        "HUB_DELIVERY__BACKOFF_BASE_S": "0.05",
        "HUB_DELIVERY__BACKOFF_MAX_S": "0.2",
    }


def start_hub_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A ``hub`` subcommand in its own process group (so a test can kill it whole)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_stack(
    home: Path,
    broker_url: str,
    smtp: SmtpSink,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    worker_args: Sequence[str] = ("--concurrency", "2"),
    extra_settings: str = "",
    database_url: str = "",
) -> Iterator[Stack]:
    """API and worker subprocesses on ``broker_url``, delivering to the SMTP sink.

    The store is a SQLite file in ``home`` unless ``database_url`` names one.
    """
    from hub import keys

    database_url = database_url or f"sqlite:///{home / 'hub.db'}"
    env = hub_env(home, broker_url, smtp.port, database_url, extra_settings)  # type: ignore[attr-defined]
    env.update(extra_env or {})
    migrate(database_url)
    api_key = keys.create_key(database_url, "tests")
    port = port or _free_port()
    worker = start_hub_process(["worker", *worker_args], env, home / "worker.log")
    api = start_hub_process(["api", "--port", str(port)], env, home / "api.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base_url), 30, "the API")
        wait_until(lambda: _worker_ready(broker_url), 30, "the worker")
        yield Stack(base_url, api_key, database_url, env, home)
    finally:
        stop(api)
        stop(worker)


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """The hub on Redis; the test process shares its settings environment."""
    home = tmp_path_factory.mktemp("hub")
    with running_stack(home, broker_url, smtp, extra_settings=EACH_ALERT) as running:
        os.environ.update(running.env)
        yield running


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _worker_ready(broker_url: str) -> bool:
    from celery import Celery

    try:
        with Celery(broker=broker_url) as probe:
            return bool(probe.control.ping(timeout=0.5))
    except (OSError, redis.ConnectionError):
        return False  # the broker itself is still starting
