"""Spec: a critical notification published behind a backlog of low ones arrives before it drains.

Each priority class has queues of its own (``email.low``, ``email.critical``),
and ``hub up`` runs a small worker for routing and every ``*.critical`` queue
beside the one that serves them all. The issue's 10,000 newsletters are gated
here at 300 low emails, sent by a one-process worker: many batches, each
far longer than the critical email's whole trip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery import Celery

from hub import queues
from tests.conftest import (
    Stack,
    missing_service,
    other_redis_db,
    running_stack,
    start_hub_process,
    stop,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed_all

# Enough that the one worker process takes ~15 s to drain them; the critical
# email must come before half of them (it takes about a second).
LOW = 300
CHUNK = 1000  # the most one recipients or topics request takes


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, broker_url: str) -> str:
    """The test's own broker: another Redis database, or RabbitMQ purged of old work."""
    if request.param == "redis":
        return other_redis_db(broker_url)
    url = os.environ.get("HUB_TEST_RABBITMQ_URL")
    if not url:
        missing_service(
            "RabbitMQ variant needs HUB_TEST_RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672//)"
        )
    with Celery(broker=url) as purge:
        purge.control.purge()
    return url  # type: ignore[return-value]


@contextmanager
def critical_worker(stack: Stack) -> Iterator[None]:
    """The second worker ``hub up`` runs: routing and the ``*.critical`` queues."""
    name = f"critical-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    args = ["worker", "-Q", queues.CRITICAL_WORKER, "--concurrency", "1", "-n", name]
    process = start_hub_process(args, stack.env, stack.home / "critical.log")
    try:
        with Celery(broker=stack.env["HUB_BROKER_URL"]) as probe:
            wait_until(
                lambda: probe.control.ping(destination=[name], timeout=0.5), 30, "critical worker"
            )
        yield
    finally:
        stop(process)


def topic_of(stack: Stack, key: str, emails: dict[str, str]) -> None:
    """Store ``emails`` (recipient id to address) as the members of topic ``key``."""
    ids = list(emails)
    with stack.client() as http:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            members = [{"id": rid, "email": emails[rid]} for rid in chunk]
            assert http.put("/v1/recipients:batch", json={"recipients": members}).status_code == 200
            added = http.put(f"/v1/topics/{key}/recipients", json={"recipients": chunk})
            assert added.status_code == 200, added.text


def test_a_critical_email_published_behind_a_low_backlog_arrives_before_the_backlog_drains(
    tmp_path: Path, broker: str, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    newsletters = {f"low-{n}-{run}": address(f"low{n}") for n in range(LOW)}
    on_call = address("oncall")
    subscriptions = [
        {
            "name": f"newsletter-{run}",
            "event": "user.registered",
            "channel": "email",
            "template": "user.registered",
            "priority": "low",
            "filter": {"data.run": {"eq": run}, "data.kind": {"eq": "newsletter"}},
        },
        {
            "name": f"page-{run}",
            "event": "user.registered",
            "channel": "email",
            "to": "{{ data.cc }}",
            "template": "user.registered",
            "priority": "critical",
            "filter": {"data.run": {"eq": run}, "data.kind": {"eq": "alert"}},
        },
    ]
    with (
        running_stack(tmp_path, broker, smtp, worker_args=["--concurrency", "1"]) as stack,
        critical_worker(stack),
        subscribed_all(stack, subscriptions),
    ):
        topic_of(stack, f"newsletter-{run}", newsletters)

        def low_received() -> int:
            return sum(len(smtp.to(email)) for email in newsletters.values())

        # Given a backlog of low emails that the worker has started on
        newsletter = {**user(address("signup")), "run": run, "kind": "newsletter"}
        with stack.client() as http:
            body = {"type": "user.registered", "data": newsletter, "topics": [f"newsletter-{run}"]}
            assert http.post("/v1/events", json=body).status_code == 202
        wait_until(low_received, 60, "the first low email")

        # When a critical one is published behind it
        stack.publish(
            "user.registered", {**user(address()), "run": run, "kind": "alert", "cc": on_call}
        )
        wait_until(lambda: smtp.to(on_call), 60, "the critical email")
        low_when_critical_arrived = low_received()

        # Then it arrived while most of the backlog was still queued, which still drains
        wait_until(lambda: low_received() >= LOW, 240, f"{LOW} low emails")

    assert low_when_critical_arrived < LOW // 2
    assert len(smtp.to(on_call)) == 1
    assert all(len(smtp.to(email)) == 1 for email in newsletters.values())
