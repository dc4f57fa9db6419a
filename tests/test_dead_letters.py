"""Spec: failed notifications are listed, resent by id or by filter, and announced as events."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from hub.store.db import session
from hub.store.models import Event
from tests.conftest import Stack, wait_until
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def failed_notification(stack: Stack, to: str) -> dict[str, object]:
    event = stack.settled(stack.publish("user.registered", user(to)))
    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    return notification  # type: ignore[no-any-return]


def test_failed_notifications_are_listed_by_status(stack: Stack) -> None:
    notification = failed_notification(stack, address("reject"))

    with stack.client() as http:
        failed = http.get("/v1/notifications", params={"status": "failed", "channel": "email"})
        sent = http.get("/v1/notifications", params={"status": "sent"})

    assert failed.status_code == 200
    assert notification["id"] in [n["id"] for n in failed.json()["items"]]
    assert all(n["status"] == "failed" for n in failed.json()["items"])
    assert notification["id"] not in [n["id"] for n in sent.json()["items"]]


def test_a_failed_notification_is_resent_by_id_with_fresh_attempts(
    stack: Stack, smtp: SmtpSink
) -> None:
    to = address("reject")
    notification = failed_notification(stack, to)
    smtp.healed.add(to)

    with stack.client() as http:
        response = http.post(f"/v1/notifications/{notification['id']}/retry")

    assert response.status_code == 202
    assert response.json() == {"requeued": [notification["id"]]}
    smtp.wait_for(lambda sink: len(sink.to(to)) == 1)
    event = stack.settled(str(notification_event(stack, notification["id"])))
    [resent] = event["notifications"]
    assert (resent["status"], resent["attempts"]) == ("sent", 1)
    assert [a["outcome"] for a in resent["attempt_log"]] == ["failed", "sent"]


def notification_event(stack: Stack, notification_id: object) -> str:
    with stack.client() as http:
        params = {"limit": 1000, "order": "desc"}
        listed = http.get("/v1/notifications", params=params).json()["items"]
    return next(n["event_id"] for n in listed if n["id"] == notification_id)


def test_retrying_a_sent_notification_is_409(stack: Stack) -> None:
    event = stack.settled(stack.publish("user.registered", user(address())))
    [notification] = event["notifications"]

    with stack.client() as http:
        response = http.post(f"/v1/notifications/{notification['id']}/retry")

    assert response.status_code == 409


def test_bulk_retry_by_filter_over_http(stack: Stack, smtp: SmtpSink) -> None:
    recipients = [address("reject") for _ in range(2)]
    ids = {failed_notification(stack, to)["id"] for to in recipients}
    smtp.healed.update(recipients)

    with stack.client() as http:
        response = http.post(
            "/v1/notifications:retry",
            json={"status": ["failed"], "channel": "email", "since": "1h"},
        )

    assert response.status_code == 202
    assert ids <= set(response.json()["requeued"])
    smtp.wait_for(lambda sink: all(len(sink.to(to)) == 1 for to in recipients))


def test_a_bad_since_filter_is_422_naming_it(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post("/v1/notifications:retry", json={"since": "yesterday-ish"})

    assert response.status_code == 422
    assert "since" in response.json()["detail"]


def test_cli_retries_failed_notifications_since_an_hour(stack: Stack, smtp: SmtpSink) -> None:
    to = address("reject")
    notification = failed_notification(stack, to)
    smtp.healed.add(to)

    result = subprocess.run(
        [sys.executable, "-m", "hub", "notifications", "retry", "--failed", "--since", "1h"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert notification["id"] in result.stdout.split()
    smtp.wait_for(lambda sink: len(sink.to(to)) == 1)


def test_a_final_failure_is_published_as_a_notification_failed_event(stack: Stack) -> None:
    notification = failed_notification(stack, address("reject"))

    def announcement() -> Event | None:
        with session(stack.database_url) as db:
            return db.scalar(
                select(Event).where(
                    Event.idempotency_key.startswith(f"failed:{notification['id']}:")
                )
            )

    announced = wait_until(announcement, what="the notification.failed event")
    assert announced.type == "notification.failed"
    assert announced.data["notification_id"] == notification["id"]
    assert "550" in announced.data["error"]
    alert = stack.settled(announced.id)
    # No alert target is configured in the test stack: Slack's outbox takes it.
    assert [(n["channel"], n["status"]) for n in alert["notifications"]] == [("slack", "sent")]
