"""Spec: notifications held by a rate limit come back when their turn is due, not over and over.

Twenty webhooks at a shared limit of 1/s once took 83 deliver tasks (waits
released and re-enqueued again and again); a wait now reserves its place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EACH_ALERT, Stack, other_redis_db, running_stack
from tests.http_receiver import HttpReceiver
from tests.smtp_sink import SmtpSink
from tests.test_sms_and_alerts import task_failed


@pytest.fixture
def limited_webhook(
    tmp_path: Path, broker_url: str, smtp: SmtpSink
) -> Iterator[tuple[Stack, HttpReceiver]]:
    receiver = HttpReceiver().start()
    env = {
        "HUB_CHANNELS__WEBHOOK__URL": receiver.url("/hook"),
        "HUB_CHANNELS__WEBHOOK__RATE_LIMIT": "5/s",
    }
    with running_stack(
        tmp_path, other_redis_db(broker_url), smtp, env, extra_settings=EACH_ALERT
    ) as stack:
        yield stack, receiver
    receiver.stop()


def test_twenty_rate_limited_webhooks_take_few_more_tasks_than_webhooks(
    limited_webhook: tuple[Stack, HttpReceiver],
) -> None:
    stack, receiver = limited_webhook
    with stack.client() as http:
        events = [{"type": "task.failed", "data": task_failed()} for _ in range(20)]
        answer = http.post("/v1/events:batch", json={"events": events}).json()

    for result in answer["results"]:
        stack.settled(result["id"], timeout_s=60)

    assert len([r for r in receiver.requests if r.path == "/hook"]) == 20
    log = (stack.home / "worker.log").read_text()
    deliver_tasks = len(re.findall(r"Task hub\.deliver\[[^\]]+\] received", log))
    # At most one task per webhook: the batch's own, or one coming back at its slot.
    assert deliver_tasks <= 20
