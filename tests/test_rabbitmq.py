"""Spec: the same pipeline runs with RabbitMQ as the broker (HUB_TEST_RABBITMQ_URL)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from celery import Celery

from tests.conftest import Stack, missing_service, running_stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


@pytest.fixture(scope="module")
def rabbit_stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSink) -> Iterator[Stack]:
    url = os.environ.get("HUB_TEST_RABBITMQ_URL")
    if not url:
        missing_service(
            "RabbitMQ variant needs HUB_TEST_RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672//)"
        )
    with Celery(broker=url) as purge:
        purge.control.purge()
    with running_stack(tmp_path_factory.mktemp("rabbit"), url, smtp) as running:  # type: ignore[arg-type]
        yield running


def test_an_event_is_delivered_through_rabbitmq(rabbit_stack: Stack, smtp: SmtpSink) -> None:
    to = address()

    event = rabbit_stack.settled(rabbit_stack.publish("user.registered", user(to)))

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    assert len(smtp.to(to)) == 1


def test_retries_work_through_rabbitmq(rabbit_stack: Stack, smtp: SmtpSink) -> None:
    to = address("busy1")

    event = rabbit_stack.settled(rabbit_stack.publish("user.registered", user(to)))

    [notification] = event["notifications"]
    assert (notification["status"], notification["attempts"]) == ("sent", 2)
    assert len(smtp.to(to)) == 1
