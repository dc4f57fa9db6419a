"""Spec: one end-to-end path per supported deployment: Redis + SQLite, Redis + PostgreSQL,
RabbitMQ + PostgreSQL. Each publishes an event, delivers its email over SMTP, and answers
/readyz 200 once a worker's heartbeat is in."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.conftest import (
    missing_service,
    other_redis_db,
    postgres_database,
    running_stack,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user

COMBINATIONS = [("redis", "sqlite"), ("redis", "postgresql"), ("rabbitmq", "postgresql")]


def _broker(kind: str, redis_url: str) -> str:
    if kind == "redis":
        return other_redis_db(redis_url)
    url = os.environ.get("HUB_TEST_RABBITMQ_URL")
    if not url:
        missing_service(
            "RabbitMQ variant needs HUB_TEST_RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672//)"
        )
    assert url is not None
    with Celery(broker=url) as purge:
        purge.control.purge()
    return url


@pytest.mark.parametrize(("broker", "store"), COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_an_event_is_delivered_and_the_hub_is_ready(
    tmp_path: Path,
    broker_url: str,
    smtp: SmtpSink,
    broker: str,
    store: str,
) -> None:
    url = _broker(broker, broker_url)
    to = address(f"{broker}-{store}")

    with ExitStack() as cleanup:
        database_url = cleanup.enter_context(postgres_database()) if store == "postgresql" else ""
        stack = cleanup.enter_context(running_stack(tmp_path, url, smtp, database_url=database_url))
        event = stack.settled(stack.publish("user.registered", user(to)), timeout_s=30)
        ready = wait_until(
            lambda: (
                (r := httpx.get(f"{stack.base_url}/readyz", timeout=5)).status_code == 200 and r
            ),
            30,
            "/readyz to answer 200",
        )

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    assert len(smtp.to(to)) == 1
    assert ready.json()["status"] == "ok"
    assert set(ready.json()["checks"]) == {"database", "broker", "migrations", "workers"}
