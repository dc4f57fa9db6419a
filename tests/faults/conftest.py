"""A hub whose processes a fault test can kill and restart: worker, beat, API, Redis."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from hub import keys
from hub.embedded import EmbeddedRedis
from hub.store.db import migrate
from tests.conftest import (
    Stack,
    _healthy,
    _worker_ready,
    hub_env,
    start_hub_process,
    wait_until,
)
from tests.smtp_sink import SmtpSink, _free_port, start_sink

# Faster clocks, so faults heal within a test, without touching the retry
# budget or backoff (those are the shipped ones): the sweeper runs every
# second and takes queued work no worker claimed after 5 s; an attempt is cut
# after 3 s. A lease of 5 s instead of 60: a live worker renews its lease
# every third of it whatever its length, so only a dead worker's work comes
# back sooner.
FAST_RECOVERY = {
    "HUB_DELIVERY__SWEEP_INTERVAL_S": "1",
    "HUB_DELIVERY__STUCK_AFTER_S": "5",
    "HUB_DELIVERY__LEASE_S": "5",
    "HUB_DELIVERY__ATTEMPT_TIMEOUT_S": "3",
}


@dataclass
class FaultyHub:
    """A hub on its own embedded Redis and SMTP sink, with handles on every process."""

    home: Path
    redis: EmbeddedRedis
    redis_port: int
    smtp: SmtpSink
    smtp_controller: Controller
    env: dict[str, str]
    api_port: int
    stack: Stack
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        self.processes[name] = start_hub_process(list(args), self.env, self.home / f"{name}.log")

    def start_worker(self, concurrency: int = 2) -> None:
        self.start("worker", "worker", "--concurrency", str(concurrency))
        wait_until(lambda: _worker_ready(self.env["HUB_BROKER_URL"]), 60, "the worker")

    def use_shipped(self, *names: str) -> None:
        """Restart the worker and beat with the shipped value of each ``delivery.<name>``."""
        for name in names:
            self.env.pop(f"HUB_DELIVERY__{name.upper()}", None)
        self.stop("beat")
        self.stop("worker")
        self.start("beat", "beat")
        self.start_worker()

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children (a crash, not a shutdown)."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def smtp_down(self) -> None:
        self.smtp_controller.stop()

    def smtp_up(self) -> None:
        """The same sink (and its record) back on the same port."""
        self.smtp_controller = Controller(
            self.smtp,
            hostname="127.0.0.1",
            port=self.smtp.port,  # type: ignore[attr-defined]
        )
        self.smtp_controller.start()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def faulty_hub(tmp_path: Path) -> Iterator[FaultyHub]:
    """Embedded Redis (AOF), SMTP sink, API, worker and beat with fast recovery settings."""
    redis = EmbeddedRedis(tmp_path / "redis")
    broker_url = redis.start()
    redis_port = int(broker_url.rsplit(":", 1)[1].split("/")[0])
    controller, smtp = start_sink()
    smtp.port = controller.port  # type: ignore[attr-defined]
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"
    env = {**hub_env(tmp_path, broker_url, controller.port, database_url), **FAST_RECOVERY}
    # The shipped retry budget and backoff, not the small ones the other tests' stack uses.
    for name in ("MAX_ATTEMPTS", "BACKOFF_BASE_S", "BACKOFF_MAX_S"):
        env.pop(f"HUB_DELIVERY__{name}")
    migrate(database_url)
    api_port = _free_port()
    stack = Stack(
        f"http://127.0.0.1:{api_port}",
        keys.create_key(database_url, "faults"),
        database_url,
        env,
        tmp_path,
    )
    hub = FaultyHub(tmp_path, redis, redis_port, smtp, controller, env, api_port, stack)
    try:
        hub.start("api", "api", "--port", str(api_port))
        hub.start("beat", "beat")
        hub.start_worker()
        wait_until(lambda: _healthy(stack.base_url), 30, "the API")
        yield hub
    finally:
        for name in list(hub.processes):
            hub.stop(name)
        hub.smtp_down()
        redis.stop()
