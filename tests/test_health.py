"""Spec: /readyz, `hub status` and worker heartbeats say whether the hub can work, and what is down.

The stack here runs on its own embedded Redis, which a test stops and starts:
the shared one is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub import health
from hub.embedded import EmbeddedRedis
from hub.settings import Settings, get_settings
from hub.store.db import migrate
from tests.conftest import Stack, running_stack, wait_until
from tests.smtp_sink import SmtpSink


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    redis = EmbeddedRedis(tmp_path_factory.mktemp("health-redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, own_redis: EmbeddedRedis, smtp: SmtpSink
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("health-hub")
    fast = {"HUB_WORKER__HEARTBEAT": "1s"}
    with running_stack(home, own_redis.url, smtp, extra_env=fast) as stack:
        yield stack


def readyz(stack: Stack, timeout_s: float = 10) -> httpx.Response:
    return httpx.get(f"{stack.base_url}/readyz", timeout=timeout_s)


def hub_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def store_only(tmp_path: Path, **update: object) -> Settings:
    """Settings with no Redis anywhere: heartbeats go to the store (as on RabbitMQ)."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    fields = {"broker_url": "amqp://guest:guest@127.0.0.1:1//", "redis_url": ""}
    return get_settings().model_copy(update={**fields, "database_url": url, **update})


def test_healthz_answers_without_checking_anything(hub: Stack) -> None:
    response = httpx.get(f"{hub.base_url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_is_200_with_every_check_ok_when_the_stack_runs(hub: Stack) -> None:
    response = wait_until(lambda: (r := readyz(hub)).status_code == 200 and r, 30, "ready")
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "migrations", "workers"}
    assert all(check["status"] == "ok" for check in body["checks"].values())
    assert "1 alive" in body["checks"]["workers"]["detail"]


def test_hub_status_prints_the_checks_workers_and_queue_depths(hub: Stack) -> None:
    result = hub_cli(hub.env, "status", "--exit-code")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "hub: ready" in result.stdout
    for name in ("database", "broker", "migrations", "workers"):
        assert name in result.stdout
    assert "queues:" in result.stdout
    assert "email.critical" in result.stdout
    assert "s ago" in result.stdout  # the worker's heartbeat


def test_hub_status_worker_exit_code_is_0_while_this_hosts_worker_beats(hub: Stack) -> None:
    result = hub_cli(hub.env, "status", "--worker", "--exit-code")

    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok:" in result.stdout


def test_readyz_goes_503_when_redis_stops_and_200_when_it_is_back(
    hub: Stack, own_redis: EmbeddedRedis
) -> None:
    wait_until(lambda: readyz(hub).status_code == 200, 30, "ready before the outage")
    port = int(own_redis.url.rsplit(":", 1)[1].split("/")[0])

    # When Redis stops
    own_redis.stop()
    stopped = time.monotonic()
    down = wait_until(lambda: (r := readyz(hub)).status_code == 503 and r, 10, "503")
    noticed_s = time.monotonic() - stopped

    # Then /readyz names the broker (and the heartbeats kept in it) as down
    body = down.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"]["status"] == "ok"
    print(f"\n/readyz noticed a stopped broker in {noticed_s * 1000:.0f} ms")
    assert noticed_s < 3

    # And once Redis is back on its port, /readyz is 200 again
    own_redis.start(port=port)
    back = time.monotonic()
    wait_until(lambda: readyz(hub).status_code == 200, 60, "200 after the outage")
    print(f"/readyz ready again {time.monotonic() - back:.1f} s after Redis came back")


def test_readyz_answers_503_within_two_seconds_when_the_broker_hangs(
    hub: Stack, own_redis: EmbeddedRedis
) -> None:
    wait_until(lambda: readyz(hub).status_code == 200, 60, "ready before the hang")
    assert own_redis.process is not None
    # A frozen broker accepts connections and never answers: only the timeout notices it.
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        response = readyz(hub)
        took_s = time.monotonic() - began
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    print(f"\n/readyz answered {response.status_code} in {took_s * 1000:.0f} ms, broker frozen")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "down"
    assert took_s < health.CHECK_TIMEOUT_S + 1


def test_a_worker_is_alive_for_30s_after_its_last_heartbeat(tmp_path: Path) -> None:
    settings = store_only(tmp_path)
    beat = health.Beat("celery@a", "a", 1, "email", time.time() - 29)
    health.write_heartbeat(settings, beat)

    assert health.check_workers(settings).ok

    health.write_heartbeat(settings, health.Beat("celery@a", "a", 1, "email", time.time() - 31))
    check = health.check_workers(settings)
    assert not check.ok
    assert check.detail.startswith("no heartbeat in the last 30s (last: celery@a, 3")


def test_workers_check_is_down_when_no_worker_ever_beat(tmp_path: Path) -> None:
    check = health.check_workers(store_only(tmp_path))
    assert not check.ok
    assert check.detail == "no worker has sent a heartbeat"


def test_heartbeats_in_redis_expire_and_a_stopped_worker_takes_its_own(
    tmp_path: Path, broker_url: str
) -> None:
    from tests.conftest import other_redis_db

    settings = store_only(tmp_path, redis_url=other_redis_db(broker_url))
    beater = health.Heartbeat(settings, "celery@beating", ["email"])
    beater.start()
    try:
        wait_until(lambda: health.check_workers(settings).ok, 10, "a heartbeat")
        [beat] = health.heartbeats(settings)
        assert beat.node == "celery@beating" and beat.pid == os.getpid()
    finally:
        beater.stop()
    assert health.heartbeats(settings) == []


def test_hub_status_worker_exit_code_fails_when_this_hosts_heartbeat_is_stale(
    tmp_path: Path,
) -> None:
    import socket

    settings = store_only(tmp_path)
    host = socket.gethostname()
    health.write_heartbeat(settings, health.Beat("celery@x", host, 1, "", time.time() - 45))
    env = {
        "HUB_BROKER_URL": settings.broker_url,
        "HUB_REDIS_URL": "",
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_VAR_DIR": str(tmp_path / "var"),
    }

    stale = hub_cli(env, "status", "--worker", "--exit-code")
    assert stale.returncode == 1
    assert "in the last 30s (last: celery@x, 4" in stale.stdout

    health.write_heartbeat(settings, health.Beat("celery@x", host, 1, "", time.time()))
    assert hub_cli(env, "status", "--worker", "--exit-code").returncode == 0
    # Another host's heartbeat does not keep this host's worker alive.
    health.write_heartbeat(settings, health.Beat("celery@x", host, 1, "", time.time() - 45))
    health.write_heartbeat(settings, health.Beat("celery@y", "elsewhere", 1, "", time.time()))
    assert hub_cli(env, "status", "--worker", "--exit-code").returncode == 1


def test_migrations_check_names_the_revision_the_code_expects(tmp_path: Path) -> None:
    settings = store_only(tmp_path)
    assert health.check_migrations(settings).ok
    empty = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    check = health.check_migrations(empty)
    assert not check.ok
    assert "hub db upgrade" in check.detail
