"""Spec: failure alerts are grouped, escalated, acknowledged, silenced and resolved.

A subscription with ``group_by`` folds matching ``task.failed`` events into
one alert group per label values. Slack and the signed webhook get one alert
after ``group_wait`` with everything that arrived meanwhile (the count, first
and last seen, up to 5 distinct messages), then at most one update per
``group_interval``; a ``task.succeeded`` sharing the labels resolves the
group and sends one "resolved" alert. An unacknowledged group escalates to
SMS after each step's delay; an acknowledged one does not; a silenced one
sends nothing but is recorded. Beat runs the ticks, as in ``hub up``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.store import alerts as stored_alerts
from hub.store.db import session
from hub.store.models import AlertGroup, Silence, utcnow
from tests.conftest import (
    Stack,
    other_redis_db,
    running_stack,
    start_hub_process,
    stop,
    wait_until,
)
from tests.http_receiver import HttpReceiver
from tests.smtp_sink import SmtpSink, _free_port
from tests.test_celery_integration import charge, host_worker
from tests.test_subscriptions import subscribed
from tests.twilio_fake import TwilioFake, start_fake

LABELS = ["data.service", "data.task_name", "data.exception"]


@dataclass
class Alerting:
    stack: Stack
    twilio: TwilioFake
    receiver: HttpReceiver

    def hooks(self, alert_id: str) -> list[dict[str, Any]]:
        """Webhook bodies received for alert group ``alert_id``, oldest first."""
        bodies = [json.loads(r.body) for r in self.receiver.requests if r.path == "/hook"]
        return [b for b in bodies if b.get("alert", {}).get("id") == alert_id]

    def slacks(self, alert_id: str) -> list[dict[str, Any]]:
        """Slack payloads received for alert group ``alert_id``."""
        payloads = [json.loads(r.body) for r in self.receiver.requests if r.path == "/slack"]
        return [p for p in payloads if alert_id in json.dumps(p)]

    def texts_to(self, number: str) -> list[str]:
        return [r.form["Body"] for r in self.twilio.requests if r.form.get("To") == number]


@pytest.fixture(scope="module")
def alerting(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Alerting]:
    """A hub with Slack, webhook and Twilio fakes, and beat ticking alerts (shipped: 1 s)."""
    twilio = start_fake()
    receiver = HttpReceiver().start()
    env = {
        "HUB_CHANNELS__SMS__ACCOUNT_SID": twilio.account_sid,
        "HUB_CHANNELS__SMS__AUTH_TOKEN": twilio.auth_token,
        "HUB_CHANNELS__SMS__FROM_NUMBER": "+14155550000",
        "HUB_CHANNELS__SMS__API_BASE": twilio.base_url,
        "HUB_CHANNELS__SLACK__WEBHOOK_URL": receiver.url("/slack"),
        "HUB_CHANNELS__WEBHOOK__URL": receiver.url("/hook"),
        "HUB_CHANNELS__WEBHOOK__SECRET": "whsec-alerts",
    }
    port = _free_port()
    env["HUB_API__PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    home = tmp_path_factory.mktemp("failure-alerts")
    with running_stack(home, other_redis_db(broker_url), smtp, env, port) as stack:
        beat = start_hub_process(["beat"], stack.env, home / "beat.log")
        try:
            yield Alerting(stack, twilio, receiver)
        finally:
            stop(beat)
    receiver.stop()
    twilio.stop()


def _grouped(run: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"alerts-{run}",
        "event": "task.failed",
        "channel": "alert",
        "to": "oncall",
        "template": "task.failed",
        "filter": {"data.run": {"eq": run}},
        "group_by": LABELS,
        "group_wait": "4s",
        "group_interval": "3s",
        "repeat_interval": "1h",
        "resolve_on": "task.succeeded",
        **extra,
    }


def _failure(run: str, n: int = 0) -> dict[str, Any]:
    return {
        "service": f"billing-{run}",
        "task_name": "charge_card",
        "task_id": uuid.uuid4().hex,
        "exception": "TimeoutError",
        "message": f"gateway did not answer (#{n % 7})",
        "run": run,
    }


def _publish_many(stack: Stack, events: list[dict[str, Any]]) -> None:
    with stack.client() as http:
        for start in range(0, len(events), 500):
            response = http.post("/v1/events:batch", json={"events": events[start : start + 500]})
            assert response.status_code == 202, response.text
            assert response.json()["rejected"] == 0


def _group_of(stack: Stack, subscription: str, count: int = 1) -> AlertGroup:
    """The subscription's alert group, once it counts ``count`` events."""

    def found() -> AlertGroup | None:
        with session(stack.database_url) as db:
            group = db.scalar(select(AlertGroup).where(AlertGroup.subscription == subscription))
            if group is not None:
                db.expunge(group)
        return group if group is not None and group.count >= count else None

    return wait_until(found, 60, f"{subscription}'s group to count {count}")  # type: ignore[no-any-return]


def _recipient(stack: Stack, rid: str, **fields: Any) -> None:
    with stack.client() as http:
        response = http.put(f"/v1/recipients/{rid}", json=fields)
    assert response.status_code in (200, 201), response.text


@contextmanager
def _oncall(alerting: Alerting, run: str) -> Iterator[str]:
    """A recipient to page by SMS; yields its E.164 number."""
    number = f"+1415555{uuid.uuid4().int % 10000:04d}"
    _recipient(alerting.stack, f"oncall-{run}", phone=number)
    yield number


def test_a_thousand_failures_become_one_alert_then_updates_at_most_once_per_interval(
    alerting: Alerting,
) -> None:
    run = uuid.uuid4().hex[:8]
    # Routing 1,000 events takes a few seconds on a loaded 2-core CI machine;
    # the wait must outlast it for the first alert to carry them all.
    with subscribed(alerting.stack, _grouped(run, group_wait="10s")):
        _publish_many(
            alerting.stack, [{"type": "task.failed", "data": _failure(run, n)} for n in range(1000)]
        )
        group = _group_of(alerting.stack, f"alerts-{run}", 1000)
        [first] = wait_until(lambda: alerting.hooks(group.id), 40, "the first alert")

        assert first["alert"]["count"] == 1000
        assert first["alert"]["status"] == "firing"
        assert len(first["alert"]["messages"]) == 5
        assert first["alert"]["group"] == {
            "data.service": f"billing-{run}",
            "data.task_name": "charge_card",
            "data.exception": "TimeoutError",
        }
        [slack] = wait_until(lambda: alerting.slacks(group.id), 10, "the Slack alert")
        assert "1000 times" in json.dumps(slack)
        assert "Acknowledge" in json.dumps(slack)

        _publish_many(
            alerting.stack, [{"type": "task.failed", "data": _failure(run)} for _ in range(5)]
        )
        updates = wait_until(
            lambda: len(alerting.hooks(group.id)) >= 2 and alerting.hooks(group.id), 20, "an update"
        )

    assert updates[1]["alert"]["count"] == 1005
    notified = _group_of(alerting.stack, f"alerts-{run}", 1005)
    assert notified.notifications_sent == 2
    assert notified.first_notified_at is not None and notified.last_notified_at is not None
    assert notified.last_notified_at - notified.first_notified_at >= timedelta(seconds=3)
    assert len(alerting.hooks(group.id)) == 2


def test_a_success_resolves_the_group_with_one_resolved_alert(alerting: Alerting) -> None:
    run = uuid.uuid4().hex[:8]
    with subscribed(alerting.stack, _grouped(run, group_wait="1s")):
        _publish_many(alerting.stack, [{"type": "task.failed", "data": _failure(run)}])
        group = _group_of(alerting.stack, f"alerts-{run}")
        wait_until(lambda: alerting.hooks(group.id), 20, "the firing alert")
        success = {"service": f"billing-{run}", "task_name": "charge_card", "task_id": run}
        alerting.stack.publish("task.succeeded", success)

        resolved = wait_until(
            lambda: [h for h in alerting.hooks(group.id) if h["alert"]["status"] == "resolved"],
            20,
            "the resolved alert",
        )

    assert len(resolved) == 1
    assert "[RESOLVED]" in resolved[0]["subject"]
    with session(alerting.stack.database_url) as db:
        assert stored_alerts.groups(db, [group.id])[group.id].status == "resolved"


def test_an_unacknowledged_group_escalates_to_sms_and_an_acknowledged_one_does_not(
    alerting: Alerting,
) -> None:
    run, acked_run = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    steps = [{"after": "2s", "channel": "sms", "to": f"recipient:oncall-{run}"}]
    acked_steps = [{"after": "2s", "channel": "sms", "to": f"recipient:oncall-{acked_run}"}]
    with (
        _oncall(alerting, run) as paged,
        _oncall(alerting, acked_run) as spared,
        subscribed(alerting.stack, _grouped(run, group_wait="1s", escalation=steps)),
        subscribed(alerting.stack, _grouped(acked_run, group_wait="1s", escalation=acked_steps)),
    ):
        _publish_many(
            alerting.stack,
            [
                {"type": "task.failed", "data": _failure(run)},
                {"type": "task.failed", "data": _failure(acked_run)},
            ],
        )
        acked = _group_of(alerting.stack, f"alerts-{acked_run}")
        escalating = _group_of(alerting.stack, f"alerts-{run}")
        wait_until(lambda: alerting.hooks(acked.id), 20, "the first alert")
        with session(alerting.stack.database_url) as db:
            assert stored_alerts.acknowledge(db, acked.id, "test", utcnow())

        [text] = wait_until(lambda: alerting.texts_to(paged), 20, "the escalation SMS")
        # The acked group's step was due as long ago as the other's.
        wait_until(lambda: _group_of(alerting.stack, f"alerts-{run}").escalation_step == 1, 10)

    assert f"billing-{run}" in text and escalating.id in text
    assert alerting.texts_to(spared) == []
    with session(alerting.stack.database_url) as db:
        assert stored_alerts.groups(db, [acked.id])[acked.id].escalation_step == 0


def test_a_silenced_group_sends_nothing_but_is_recorded(alerting: Alerting) -> None:
    run = uuid.uuid4().hex[:8]
    with session(alerting.stack.database_url) as db:
        db.add(
            Silence(
                id=f"sil_{run}",
                matchers={"data.service": f"billing-{run}"},
                ends_at=utcnow() + timedelta(hours=1),
                comment="maintenance",
            )
        )
    with subscribed(alerting.stack, _grouped(run, group_wait="1s")):
        _publish_many(
            alerting.stack, [{"type": "task.failed", "data": _failure(run)} for _ in range(3)]
        )
        group = _group_of(alerting.stack, f"alerts-{run}", 3)
        # A firing group of the same moment is alerted: ticks ran past the silenced one's wait.
        other = uuid.uuid4().hex[:8]
        with subscribed(alerting.stack, _grouped(other, group_wait="1s")):
            _publish_many(alerting.stack, [{"type": "task.failed", "data": _failure(other)}])
            loud = _group_of(alerting.stack, f"alerts-{other}")
            wait_until(lambda: alerting.hooks(loud.id), 20, "the unsilenced group's alert")

    assert group.status == "silenced" and group.count == 3
    assert alerting.hooks(group.id) == [] and alerting.slacks(group.id) == []


def test_the_webhook_body_carries_the_alert(alerting: Alerting) -> None:
    run = uuid.uuid4().hex[:8]
    with subscribed(alerting.stack, _grouped(run, group_wait="1s")):
        _publish_many(alerting.stack, [{"type": "task.failed", "data": _failure(run)}])
        group = _group_of(alerting.stack, f"alerts-{run}")
        [body] = wait_until(lambda: alerting.hooks(group.id), 20, "the alert")

    alert = body["alert"]
    assert set(alert) == {
        "id",
        "status",
        "count",
        "first_seen",
        "last_seen",
        "messages",
        "group",
        "ack_url",
    }
    assert alert["ack_url"].startswith(f"{alerting.stack.base_url}/v1/alerts/ack/")
    assert alert["group"]["data.service"] == f"billing-{run}"


def test_a_thousand_failures_of_another_celery_app_become_one_alert_and_its_success_resolves_it(
    alerting: Alerting, broker_url: str, tmp_path: Path
) -> None:
    service = f"billing-{uuid.uuid4().hex[:8]}"
    grouped = {
        **_grouped(service, group_wait="15s", group_interval="1h"),
        "filter": {"data.service": {"eq": service}},
    }
    publish = {"HOST_PUBLISH_VIA": "http", "HOST_HUB_URL": alerting.stack.base_url}
    with (
        subscribed(alerting.stack, grouped),
        host_worker(
            tmp_path,
            other_redis_db(other_redis_db(broker_url)),
            service,
            HOST_KEY=alerting.stack.api_key,
            **publish,
        ) as host,
    ):
        started = time.monotonic()
        for n in range(1000):
            charge(host, n)
        group = _group_of(alerting.stack, f"alerts-{service}", 1000)
        storm_s = time.monotonic() - started
        [alert] = wait_until(lambda: alerting.hooks(group.id), 30, "the alert")
        [slack] = wait_until(lambda: alerting.slacks(group.id), 10, "the Slack alert")

        charge(host, 1000, fail=False)
        resolved = wait_until(
            lambda: [h for h in alerting.hooks(group.id) if h["alert"]["status"] == "resolved"],
            30,
            "the resolved alert",
        )

    assert storm_s < 15, f"the 1,000 failures took {storm_s:.1f}s, past group_wait"
    assert alert["alert"]["count"] == 1000 and alert["alert"]["status"] == "firing"
    assert alert["alert"]["group"]["data.exception"] == "ChargeDeclined"
    assert "1000 times" in json.dumps(slack)
    assert len(resolved) == 1
    assert [h["alert"]["status"] for h in alerting.hooks(group.id)] == ["firing", "resolved"]
