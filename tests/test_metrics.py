"""Spec: /metrics shows what the hub did, from the API and from every worker process.

The API's /metrics covers its machine (the API and the workers sharing its
var_dir); a worker with ``worker.metrics_port`` serves its own, so a worker
on another machine can be scraped on its own.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub import metrics
from hub.embedded import _free_port
from hub.settings import get_settings
from hub.store.db import migrate
from tests.conftest import Stack, other_redis_db, running_stack, wait_until
from tests.smtp_sink import SmtpSink


def user(email: str) -> dict[str, str]:
    return {"user_id": uuid.uuid4().hex[:8], "email": email, "name": "Ada"}


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` in Prometheus text (labels in any order); 0 if absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(match[3])
    return 0.0


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[tuple[Stack, int]]:
    """A stack of its own (its own Redis database) whose worker serves /metrics too."""
    home = tmp_path_factory.mktemp("metrics-hub")
    port = _free_port()
    env = {"HUB_WORKER__METRICS_PORT": str(port)}
    with running_stack(home, other_redis_db(broker_url), smtp, extra_env=env) as stack:
        yield stack, port


@pytest.fixture(scope="module")
def after_a_run(hub: tuple[Stack, int]) -> tuple[Stack, int]:
    stack, port = hub
    for _ in range(3):
        stack.settled(
            stack.publish("user.registered", user(f"m-{uuid.uuid4().hex[:8]}@example.com"))
        )
    return stack, port


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_the_api_metrics_count_events_and_the_workers_sends(after_a_run: tuple[Stack, int]) -> None:
    stack, _ = after_a_run

    text = scrape(f"{stack.base_url}/metrics")

    assert value(text, "hub_events_total", type="user.registered", outcome="accepted") >= 3
    assert value(text, "hub_notifications_total", channel="email", status="sent") >= 3
    # Counted in the worker's pool processes, read by the API from their files.
    assert value(text, "hub_send_seconds_count", channel="email") >= 3
    assert value(text, "hub_send_seconds_bucket", channel="email", le="+Inf") >= 3
    assert value(text, "hub_send_seconds_sum", channel="email") > 0
    assert 'hub_queue_depth{queue="email.critical"}' in text
    assert "hub_circuit_open{" in text
    assert value(text, "hub_oldest_queued_seconds") == 0  # everything was sent


def test_metrics_take_no_api_key(after_a_run: tuple[Stack, int]) -> None:
    stack, _ = after_a_run
    assert httpx.get(f"{stack.base_url}/metrics", timeout=10).status_code == 200


def test_a_worker_serves_its_own_metrics_on_its_port(after_a_run: tuple[Stack, int]) -> None:
    _, port = after_a_run

    text = wait_until(lambda: scrape(f"http://127.0.0.1:{port}/metrics"), 10, "worker metrics")

    assert value(text, "hub_notifications_total", channel="email", status="sent") >= 3
    assert value(text, "hub_send_seconds_count", channel="email") >= 3
    # The API's own counts are not the worker's.
    assert value(text, "hub_events_total", type="user.registered", outcome="accepted") == 0
    assert "hub_queue_depth" in text


def test_rejected_events_are_counted_under_a_bounded_type(after_a_run: tuple[Stack, int]) -> None:
    stack, _ = after_a_run
    with stack.client() as http:
        assert http.post("/v1/events", json={"type": "no.such", "data": {}}).status_code == 422

    text = scrape(f"{stack.base_url}/metrics")

    assert value(text, "hub_events_total", type="unknown", outcome="rejected") >= 1
    assert "no.such" not in text


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[Path]:
    settings = get_settings().model_copy(update={"var_dir": tmp_path / "var"})
    folder = metrics.enable(settings, "test")
    assert folder is not None
    try:
        yield folder
    finally:
        metrics.disable()
        os.environ.pop(metrics.MULTIPROC_ENV, None)


def test_counting_is_off_until_a_process_enables_it(tmp_path: Path) -> None:
    assert not metrics.enabled()
    metrics.notifications("email", {"sent": 1})  # a no-op, and no error
    off = get_settings().model_copy(update={"var_dir": tmp_path})
    off.worker = off.worker.model_copy(update={"metrics": False})
    assert metrics.enable(off, "test") is None
    assert not metrics.enabled()


def test_every_metric_is_rendered_from_the_process_folders(counting: Path, tmp_path: Path) -> None:
    metrics.event("user.registered", "accepted", 2)
    metrics.notifications("email", {"sent": 2, "retrying": 1})
    metrics.send_seconds("email", [0.02, 0.3])
    metrics.retries("email", 1)
    metrics.rate_limit_waits("sms", [0.5])
    metrics.circuit("sms", "twilio", True)
    settings = get_settings().model_copy(update={"var_dir": tmp_path / "var", "broker_url": ""})

    text = metrics.render(settings, metrics.machine_folders(settings)).decode()

    assert value(text, "hub_events_total", type="user.registered", outcome="accepted") == 2
    assert value(text, "hub_notifications_total", channel="email", status="retrying") == 1
    assert value(text, "hub_send_seconds_count", channel="email") == 2
    assert value(text, "hub_send_seconds_bucket", channel="email", le="0.05") == 1
    assert value(text, "hub_retries_total", channel="email") == 1
    assert value(text, "hub_rate_limit_wait_seconds_count", channel="sms") == 1
    assert value(text, "hub_circuit_open", channel="sms", provider="twilio") == 1


def test_folders_of_processes_that_are_gone_are_removed(counting: Path) -> None:
    import socket

    root = counting.parent
    gone = root / f"worker-{socket.gethostname()}-999999"
    elsewhere = root / "worker-otherhost-999999"
    for folder in (gone, elsewhere):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")

    metrics.remove_stale(root)

    assert not gone.exists()
    assert elsewhere.exists()  # another host's: its pids mean nothing here
    assert counting.exists()  # this process is alive


def test_queue_depth_is_read_from_redis_when_scraped(tmp_path: Path, broker_url: str) -> None:
    import redis

    # A database no stack uses (they take 0 and 1): no worker takes these.
    url = broker_url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    redis.Redis.from_url(url).rpush("email.low", b"a", b"b")
    settings = get_settings().model_copy(update={"broker_url": url, "var_dir": tmp_path})
    migrate(f"sqlite:///{tmp_path / 'hub.db'}")

    text = metrics.render(settings, []).decode()

    assert value(text, "hub_queue_depth", queue="email.low") == 2
    assert value(text, "hub_queue_depth", queue="email") == 0


def test_metrics_can_have_their_own_address_and_then_leave_the_api_port(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> None:
    home = tmp_path_factory.mktemp("metrics-address")
    port = _free_port()
    env = {"HUB_API__METRICS_ADDRESS": f"127.0.0.1:{port}"}
    # Not the module stack's database either: it is still running.
    broker = other_redis_db(broker_url, offset=2)
    with running_stack(home, broker, smtp, extra_env=env) as stack:
        stack.settled(
            stack.publish("user.registered", user(f"a-{uuid.uuid4().hex[:8]}@example.com"))
        )
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        on_the_api_port = httpx.get(f"{stack.base_url}/metrics", timeout=10)

    assert 'hub_notifications_total{channel="email",status="sent"}' in text
    assert on_the_api_port.status_code == 404
