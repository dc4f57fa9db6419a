"""Spec: a provider's Retry-After is trusted only up to delivery.max_retry_after_s.

A 400-digit number of seconds, or a date in the year 9999, once raised
OverflowError between the sends of a batch and their record, or paused a
channel for every worker for thousands of years. Here the cap is one second
(its value is not what is tested; that a hostile value is bounded is).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import EACH_ALERT, Stack, other_redis_db, running_stack
from tests.http_receiver import HttpReceiver, Response
from tests.smtp_sink import SmtpSink
from tests.test_sms_and_alerts import task_failed


@pytest.fixture(scope="module")
def slack_stack(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[tuple[Stack, HttpReceiver]]:
    receiver = HttpReceiver().start()
    env = {
        "HUB_CHANNELS__SLACK__WEBHOOK_URL": receiver.url("/slack"),
        "HUB_DELIVERY__MAX_RETRY_AFTER_S": "1",
    }
    home = tmp_path_factory.mktemp("hostile")
    with running_stack(
        home, other_redis_db(broker_url), smtp, env, extra_settings=EACH_ALERT
    ) as stack:
        yield stack, receiver
    receiver.stop()


@pytest.mark.parametrize(
    "retry_after",
    ["9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"],
    ids=["400 digits", "year 9999"],
)
def test_a_hostile_retry_after_is_capped_and_the_alert_goes_out_once(
    slack_stack: tuple[Stack, HttpReceiver], retry_after: str
) -> None:
    stack, receiver = slack_stack
    before = len(receiver.requests)
    receiver.script(Response(429, {"Retry-After": retry_after}, body="rate_limited"), path="/slack")

    event = stack.settled(stack.publish("task.failed", task_failed()), timeout_s=30)

    [slack] = [n for n in event["notifications"] if n["channel"] == "slack"]
    assert slack["status"] == "sent"
    assert [a["outcome"] for a in slack["attempt_log"]] == ["transient", "sent"]
    first, second = (datetime.fromisoformat(a["started_at"]) for a in slack["attempt_log"])
    assert 1.0 <= (second - first).total_seconds() < 15
    assert len(receiver.requests) - before == 2
    assert "OverflowError" not in (Path(stack.home) / "worker.log").read_text()
