"""Spec: another Celery application reports its failures to the hub in two lines.

The end-to-end tests run a separate Celery app (``tests/host_app``: its own
code, its own broker database, no ``HUB_*`` variable) as a real prefork
``celery worker``, so the integration starts its sender in the forked child
that runs the task, and read what reached the hub from the hub's store.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Text, cast, select

from hub.embedded import _free_port
from hub.integrations.celery import RateLimitedLog, install, summarise
from hub.store.db import session
from hub.store.models import Event
from tests.conftest import Stack, other_redis_db, stop, wait_until
from tests.http_receiver import HttpReceiver, Response

ROOT = Path(__file__).parent.parent
FAILURES = 20


@contextmanager
def host_worker(
    home: Path, broker: str, service: str, *worker_args: str, **publish: str
) -> Iterator[Celery]:
    """The billing app's worker (one prefork child) and a client of the same app to call it."""
    name = f"billing-{uuid.uuid4().hex[:8]}@test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HOST_BROKER_URL=broker, HOST_SERVICE=service, **publish)
    args = ["worker", "-Q", "billing", "-c", "1", "-P", "prefork", "-n", name, "-l", "INFO"]
    args += worker_args
    with (home / f"{service}.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.host_app.tasks", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Celery("billing-client", broker=broker)
    client.conf.task_default_queue = "billing"
    try:
        wait_until(
            lambda: client.control.ping(destination=[name], timeout=0.5), 30, "the host worker"
        )
        yield client
    finally:
        stop(worker)
        client.close()


def reported(stack: Stack, service: str, event_type: str) -> list[tuple[str, dict[str, Any]]]:
    """``(idempotency key, data)`` of every ``event_type`` event the hub stored for ``service``."""
    query = select(Event.idempotency_key, cast(Event.data, Text)).where(Event.type == event_type)
    with session(stack.database_url) as db:
        rows = [(str(key), json.loads(raw)) for key, raw in db.execute(query)]
    return [(key, data) for key, data in rows if data.get("service") == service]


def charge(host: Celery, n: int, fail: bool = True) -> str:
    """Call billing.charge with a secret in a kwarg and in a positional dict; its task id."""
    customer = {"id": f"c{n}", "card": {"Api_Token": "tok-positional-secret"}}
    kwargs = {"password": "hunter2", "fail": fail}
    return str(host.send_task("billing.charge", args=[customer, 42], kwargs=kwargs).id)


def assert_failure_reported(key: str, data: dict[str, Any], service: str, task_id: str) -> None:
    assert key == f"task.failed:{service}:{task_id}:0"
    assert data["task_name"] == "billing.charge"
    assert data["exception"] == "ChargeDeclined"
    assert data["message"].startswith("card of customer c") and "declined for 42" in data["message"]
    assert "raise ChargeDeclined" in data["traceback"]
    assert (data["retries"], data["queue"]) == (0, "billing")
    assert data["hostname"].startswith("billing-")
    assert "'id': 'c" in data["args"] and "'Api_Token': '[redacted]'" in data["args"]
    assert "'password': '[redacted]'" in data["kwargs"] and "'fail': True" in data["kwargs"]
    text = json.dumps(data)
    assert "hunter2" not in text and "tok-positional-secret" not in text


def test_a_failing_task_in_another_celery_app_reaches_the_hub_as_task_failed_over_http(
    stack: Stack, broker_url: str, tmp_path: Path
) -> None:
    service = f"billing-{uuid.uuid4().hex[:8]}"
    publish = {"HOST_PUBLISH_VIA": "http", "HOST_HUB_URL": stack.base_url}
    with host_worker(
        tmp_path, other_redis_db(broker_url), service, HOST_KEY=stack.api_key, **publish
    ) as host:
        task_ids = [charge(host, n) for n in range(FAILURES)]

        failures = wait_until(
            lambda: len(got := reported(stack, service, "task.failed")) == FAILURES and got,
            what=f"{FAILURES} task.failed events",
        )
        by_task = {data["task_id"]: (key, data) for key, data in failures}
        assert set(by_task) == set(task_ids)
        for task_id, (key, data) in by_task.items():
            assert_failure_reported(key, data, service, task_id)

        # Two successes, then a failure of another task as a marker: once the
        # marker is stored, both successes were handled (one worker process, in order).
        succeeded = [charge(host, FAILURES, fail=False), charge(host, FAILURES + 1, fail=False)]
        host.send_task("billing.refund")
        wait_until(
            lambda: any(d["task_name"] == "billing.refund" for _, d in failures_of(stack, service)),
            what="the marker failure",
        )

    [(key, data)] = reported(stack, service, "task.succeeded")
    assert key == f"task.succeeded:{service}:{succeeded[0]}"
    assert (data["task_name"], data["task_id"], data["queue"]) == (
        "billing.charge",
        succeeded[0],
        "billing",
    )


def test_a_worker_process_recycled_after_each_task_still_reports_its_failure(
    stack: Stack, broker_url: str, tmp_path: Path
) -> None:
    # Each child exits right after its task: its sender thread is a daemon,
    # so the report goes out only because the integration flushes at exit.
    service = f"billing-{uuid.uuid4().hex[:8]}"
    publish = {"HOST_PUBLISH_VIA": "http", "HOST_HUB_URL": stack.base_url}
    recycled = ("--max-tasks-per-child", "1")
    broker = other_redis_db(broker_url)
    with host_worker(
        tmp_path, broker, service, *recycled, HOST_KEY=stack.api_key, **publish
    ) as host:
        task_ids = {charge(host, n) for n in range(5)}

        failures = wait_until(
            lambda: len(got := failures_of(stack, service)) == 5 and got,
            what="5 task.failed events from 5 short-lived processes",
        )

    assert {data["task_id"] for _, data in failures} == task_ids


def failures_of(stack: Stack, service: str) -> list[tuple[str, dict[str, Any]]]:
    return reported(stack, service, "task.failed")


def test_with_broker_true_failures_reach_the_hub_through_send_task(
    stack: Stack, tmp_path: Path
) -> None:
    service = f"billing-{uuid.uuid4().hex[:8]}"
    shared_broker = stack.env["HUB_BROKER_URL"]
    with host_worker(tmp_path, shared_broker, service, HOST_PUBLISH_VIA="broker") as host:
        task_ids = [charge(host, n) for n in range(5)]

        failures = wait_until(
            lambda: len(got := failures_of(stack, service)) == 5 and got,
            what="5 task.failed events through the broker",
        )
        for key, data in failures:
            assert_failure_reported(key, data, service, data["task_id"])
        assert {data["task_id"] for _, data in failures} == set(task_ids)

        charge(host, 5, fail=False)
        wait_until(
            lambda: reported(stack, service, "task.succeeded"), what="the task.succeeded event"
        )


def test_with_the_hub_down_a_failing_task_stays_fast_never_raises_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, boom = failing_app("down")
    plain_app, plain_boom = failing_app("plain")  # the same task with no integration
    closed = f"http://127.0.0.1:{_free_port()}"
    caplog.set_level(logging.WARNING, logger="hub.integrations.celery")
    integration = install(app, url=closed, api_key="hub_nope", service="down")
    try:
        # Interleaved, so a busy machine slows both alike.
        timings: dict[Any, list[float]] = {boom: [], plain_boom: []}
        for _ in range(50):
            for task in timings:
                started = time.perf_counter()
                assert task.apply(kwargs={"n": 1}).failed()
                timings[task].append(time.perf_counter() - started)
        wait_until(lambda: integration.dropped >= 1, what="a dropped event")
    finally:
        integration.close()

    with_hub_down, without = (statistics.median(timings[task]) for task in (boom, plain_boom))
    assert with_hub_down < without * 1.5 + 0.001, (with_hub_down, without)
    warnings = [r for r in caplog.records if r.name == "hub.integrations.celery"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert closed in warnings[0].getMessage()


def test_the_failure_log_says_at_most_one_line_a_minute() -> None:
    now = [1000.0]
    lines: list[str] = []
    logger = logging.getLogger("test.ratelimited")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        log = RateLimitedLog(logger, interval_s=60.0, clock=lambda: now[0])
        for moment in (1000.0, 1001.0, 1059.9, 1060.0, 1119.0, 1200.0):
            now[0] = moment
            log.warning("hub unreachable: %s", moment)
    finally:
        logger.removeHandler(handler)

    assert lines == [
        "hub unreachable: 1000.0",
        "hub unreachable: 1060.0 (2 more since the last line)",
        "hub unreachable: 1200.0 (1 more since the last line)",
    ]


def test_importing_the_integration_loads_no_hub_settings(tmp_path: Path) -> None:
    # A settings.toml that would stop any hub process, in the directory the
    # host app runs from: the integration must not read it.
    (tmp_path / "settings.toml").write_text("this is = not [toml\n")
    code = (
        "import sys\n"
        "from celery import Celery\n"
        "from hub.integrations.celery import install\n"
        "install(Celery('x', broker='memory://'), url='http://127.0.0.1:1', api_key='k',"
        " service='x').close()\n"
        "print(sorted(m for m in sys.modules if m == 'hub' or m.startswith('hub.')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.replace("'", '"')) == [
        "hub",
        "hub.integrations",
        "hub.integrations.celery",
    ]


def test_secrets_are_redacted_in_dicts_at_any_depth_and_in_positional_dicts() -> None:
    args = ({"user": "ada", "auth": {"SECRET_value": "s1", "tokens": ["t1"]}}, "plain", 3)
    summary = summarise(args)

    assert summary == (
        "({'user': 'ada', 'auth': {'SECRET_value': '[redacted]', 'tokens': '[redacted]'}},"
        " 'plain', 3)"
    )


def test_secrets_in_object_reprs_and_strings_are_masked() -> None:
    class Credentials:
        def __repr__(self) -> str:
            return "Credentials(user='ada', password='pa ss', api_key=abc123)"

    summary = summarise([Credentials(), "postgres?token=xyz&x=1"])

    assert "pa ss" not in summary and "abc123" not in summary and "xyz" not in summary
    assert "user='ada'" in summary and "x=1" in summary


def test_a_summary_is_at_most_1_kb_however_large_the_arguments() -> None:
    huge = {"rows": ["é" * 10_000] * 10_000, "more": list(range(1_000_000))}

    started = time.perf_counter()
    summary = summarise(huge)
    elapsed = time.perf_counter() - started

    assert len(summary.encode()) <= 1024
    assert summary.startswith("{'rows': ['éé") and summary.endswith("...")
    assert elapsed < 0.01


def accepted(events: int, stall_s: float = 0.5) -> Response:
    """What the hub answers a batch of ``events`` it accepted, after ``stall_s``."""
    results = [{"index": i, "status": "accepted", "id": f"evt_{i}"} for i in range(events)]
    body = json.dumps({"accepted": events, "rejected": 0, "results": results})
    return Response(202, {"Content-Type": "application/json"}, body, stall_s=stall_s)


def failing_app(name: str) -> tuple[Celery, Any]:
    app = Celery(name, broker="memory://")

    @app.task(name=f"{name}.boom")
    def boom(n: int = 0) -> None:
        raise RuntimeError(f"boom {n}")

    return app, boom


def test_events_queued_while_a_request_is_in_flight_go_in_one_batch_request() -> None:
    app, boom = failing_app("batching")
    with HttpReceiver() as receiver:
        receiver.script(accepted(1), accepted(5))
        integration = install(app, url=receiver.url(), api_key="hub_k", service="batching")
        try:
            boom.apply()
            receiver.wait_for(1)  # the sender is now waiting for the hub's answer
            for n in range(5):
                boom.apply(kwargs={"n": n})
            first, second = receiver.wait_for(2)
            wait_until(lambda: integration.sent == 6, what="both answers")
        finally:
            integration.close()

    assert receiver.connections == 1  # one client, its connection reused
    assert (first.path, second.path) == ("/v1/events:batch", "/v1/events:batch")
    assert first.headers["Authorization"] == "Bearer hub_k"
    events = json.loads(second.body)["events"]
    assert [e["data"]["kwargs"] for e in events] == [f"{{'n': {n}}}" for n in range(5)]
    assert len({e["id"] for e in events}) == 5


def test_a_full_queue_drops_and_counts_without_raising() -> None:
    app, boom = failing_app("full")
    with HttpReceiver() as receiver:
        receiver.script(accepted(1), accepted(3))
        integration = install(app, url=receiver.url(), api_key="hub_k", service="full", max_queue=3)
        try:
            boom.apply()
            receiver.wait_for(1)
            for n in range(9):
                assert boom.apply(kwargs={"n": n}).failed()
            assert integration.dropped == 6
            requests = receiver.wait_for(2)
            wait_until(lambda: integration.sent == 4, what="the queued events")
        finally:
            integration.close()

    assert [len(json.loads(r.body)["events"]) for r in requests] == [1, 3]


def test_a_forked_child_starts_its_own_sender() -> None:
    app, boom = failing_app("forked")
    with HttpReceiver() as receiver:
        receiver.script(accepted(1), accepted(1))
        integration = install(app, url=receiver.url(), api_key="hub_k", service="forked")
        try:
            boom.apply(kwargs={"n": 1})  # the parent's sender thread and HTTP client exist
            receiver.wait_for(1)
            child = os.fork()
            if child == 0:  # pragma: no cover (the child reports by exit code)
                boom.apply(kwargs={"n": 2})
                integration.close()  # waits for the child's own sender to send it
                os._exit(0 if integration.sent == 1 else 1)
            _, status = os.waitpid(child, 0)
            parent, forked = receiver.wait_for(2)
        finally:
            integration.close()

    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(forked.body)["events"][0]["data"]["kwargs"] == "{'n': 2}"
    assert json.loads(parent.body)["events"][0]["data"]["kwargs"] == "{'n': 1}"


def test_with_retried_true_each_retry_is_reported_before_the_final_failure() -> None:
    app = Celery("flaky", broker="memory://")

    @app.task(name="flaky.sync", bind=True, max_retries=1)
    def sync(self: Any, token: str) -> None:
        raise self.retry(exc=ConnectionError("upstream down"), countdown=0)

    with HttpReceiver() as receiver:
        receiver.script(accepted(1, stall_s=0), accepted(1, stall_s=0))
        integration = install(
            app, url=receiver.url(), api_key="hub_k", service="flaky", retried=True
        )
        try:
            task_id = sync.apply(kwargs={"token": "t-123"}).id
            wait_until(lambda: integration.sent == 2, what="both events")
        finally:
            integration.close()

    events = [e for r in receiver.requests for e in json.loads(r.body)["events"]]
    assert [(e["type"], e["id"]) for e in events] == [
        ("task.retried", f"task.retried:flaky:{task_id}:0"),
        ("task.failed", f"task.failed:flaky:{task_id}:1"),
    ]
    for event in events:
        assert event["data"]["exception"] == "ConnectionError"
        assert event["data"]["message"] == "upstream down"
        assert event["data"]["kwargs"] == "{'token': '[redacted]'}"
