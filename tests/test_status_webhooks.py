"""Status webhooks: signed reports of the statuses asked for, retried, never in the way."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.status_webhooks import StatusChange, encode, receiver
from hub.store.models import Notification
from hub.webhooks import verify
from tests.conftest import Stack, other_redis_db, running_stack
from tests.http_receiver import HttpReceiver, Response
from tests.smtp_sink import SmtpSink

SECRET = "status-webhook-secret-of-32-bytes!!"


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiving:
        yield receiving


@pytest.fixture
def hub_with_hook(
    tmp_path: Path, broker_url: str, smtp: SmtpSink, hook: HttpReceiver
) -> Iterator[Stack]:
    settings = f"""
[[status_webhooks]]
url = "{hook.url("/status")}"
secret = "{SECRET}"
statuses = ["sent"]
timeout_s = 1.0
"""
    # A broker database of its own: the session's stack has other settings.
    with running_stack(
        tmp_path, other_redis_db(broker_url), smtp, extra_settings=settings
    ) as running:
        yield running


def test_a_status_report_is_signed_retried_and_never_delays_the_notification(
    hub_with_hook: Stack, hook: HttpReceiver, smtp: SmtpSink
) -> None:
    # Given a receiver that first hangs (past the 1 s timeout), then fails with a 500
    hook.script(Response(stall_s=30), Response(500))

    # When an event is published whose email is sent
    published = time.monotonic()
    event_id = hub_with_hook.publish(
        "user.registered", {"user_id": "u1", "email": "ada@example.com", "name": "Ada"}
    )

    # Then the email is sent at once, whatever the receiver does
    event = hub_with_hook.settled(event_id, timeout_s=15)
    [notification] = [n for n in event["notifications"] if n["channel"] == "email"]
    assert notification["status"] == "sent"
    assert time.monotonic() - published < 5

    # And the receiver gets the report until it answers 200: three times, the same body
    requests = hook.wait_for(3, timeout_s=30)
    assert len({request.body for request in requests}) == 1
    for request in requests:
        assert request.path == "/status"
        verify(SECRET, request.body, request.headers["X-Hub-Signature"])
    body = json.loads(requests[0].body)
    assert body == {
        "id": f"{notification['id']}.sent",
        "notification_id": notification["id"],
        "event_id": event_id,
        "status": "sent",
        "reason": None,
        "channel": "email",
        "recipient": "ada@example.com",
        "provider": "default",
        "at": body["at"],
    }
    assert body["at"].endswith("Z")
    assert requests[0].headers["X-Hub-Delivery"] == body["id"]


def test_only_the_statuses_a_receiver_asked_for_are_reported(
    hub_with_hook: Stack, hook: HttpReceiver
) -> None:
    # Given a receiver of "sent" only, and an event whose email fails (its template breaks)
    failed_id = hub_with_hook.publish("test.broken", {"email": "bob@example.com"})
    failed = hub_with_hook.settled(failed_id)
    assert {n["status"] for n in failed["notifications"]} == {"failed"}

    # When an event is sent after it
    sent_id = hub_with_hook.publish(
        "user.registered", {"user_id": "u2", "email": "eve@example.com", "name": "Eve"}
    )
    hub_with_hook.settled(sent_id)

    # Then only the send was reported
    [request] = hook.wait_for(1)
    time.sleep(1)  # a report of the failure would have come by now
    assert [json.loads(r.body)["status"] for r in hook.requests] == ["sent"]
    assert json.loads(request.body)["event_id"] == sent_id


def test_each_status_of_a_notification_has_its_own_report_id() -> None:
    # A provider's "delivered" after "sent" is a new report, never a duplicate of it
    row = Notification(
        id="ntf_1",
        event_id="evt_1",
        channel="sms",
        recipient="+15555550100",
        status="delivered",
        provider="twilio",
        last_error=None,
        updated_at=datetime(2024, 6, 10, 12, 0, tzinfo=UTC),
    )
    delivered = StatusChange.of(row).body()
    sent = replace(StatusChange.of(row), status="sent").body()
    assert delivered["id"] == "ntf_1.delivered" != sent["id"] == "ntf_1.sent"
    assert delivered["at"] == "2024-06-10T12:00:00.000Z"
    # Serialised as the webhook channel's bodies: compact, sorted keys
    assert encode(delivered).startswith(b'{"at":"2024-06-10T12:00:00.000Z","channel":"sms"')


def test_a_report_goes_to_the_receiver_it_was_enqueued_for(tmp_path: Path) -> None:
    from hub.settings import load_settings

    path = tmp_path / "settings.toml"
    path.write_text(
        '[[status_webhooks]]\nurl = "https://a.example/"\n'
        '[[status_webhooks]]\nurl = "https://b.example/"\nstatuses = ["delivered"]\n'
    )
    settings = load_settings(path)
    first, second = settings.status_webhooks
    assert first.statuses == ["sent", "delivered", "failed"]
    assert receiver(settings, 1, "https://b.example/") is second
    # Reordered by a reload: found by its URL, never another's secret
    assert receiver(settings, 0, "https://b.example/") is second
    # Removed by a reload: nothing more is sent
    assert receiver(settings, 0, "https://elsewhere.example/") is None


def test_a_receiver_url_and_statuses_are_checked_at_start_up(tmp_path: Path) -> None:
    from hub.errors import ConfigError
    from hub.settings import load_settings

    path = tmp_path / "settings.toml"
    path.write_text('[[status_webhooks]]\nurl = "ftp://a.example/"\nstatuses = ["queued"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "status_webhooks.0.url" in str(caught.value)
    assert "status_webhooks.0.statuses.0" in str(caught.value)
