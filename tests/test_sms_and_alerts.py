"""Spec: SMS and alerts flow end to end, to a local Twilio fake and webhook receivers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from hub import webhooks
from hub.store.db import session
from hub.store.models import Event
from tests.conftest import EACH_ALERT, Stack, other_redis_db, running_stack, wait_until
from tests.http_receiver import HttpReceiver, Response
from tests.smtp_sink import SmtpSink, _free_port
from tests.test_publish_to_email import address, user
from tests.twilio_fake import Reply, TwilioFake, start_fake

WEBHOOK_SECRET = "whsec-test"
STATUS_SECRET = "status-hook-secret-of-at-least-32b"


@dataclass
class Peers:
    stack: Stack
    twilio: TwilioFake
    receiver: HttpReceiver

    def received(self, path: str) -> list[object]:
        return [r for r in self.receiver.requests if r.path == path]

    def wait_path(self, path: str, count: int = 1) -> list:  # type: ignore[type-arg]
        return wait_until(  # type: ignore[no-any-return]
            lambda: len(self.received(path)) >= count and self.received(path),
            what=f"{count} request(s) to {path}",
        )


@pytest.fixture(scope="module")
def peers(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Peers]:
    twilio = start_fake()
    receiver = HttpReceiver().start()
    port = _free_port()
    env = {
        "HUB_CHANNELS__SMS__ACCOUNT_SID": twilio.account_sid,
        "HUB_CHANNELS__SMS__AUTH_TOKEN": twilio.auth_token,
        "HUB_CHANNELS__SMS__FROM_NUMBER": "+14155550000",
        "HUB_CHANNELS__SMS__API_BASE": twilio.base_url,
        "HUB_CHANNELS__SMS__STATUS_CALLBACK_URL": f"http://127.0.0.1:{port}/v1/callbacks/twilio",
        "HUB_CHANNELS__SLACK__WEBHOOK_URL": receiver.url("/slack"),
        "HUB_CHANNELS__WEBHOOK__URL": receiver.url("/hook"),
        "HUB_CHANNELS__WEBHOOK__SECRET": WEBHOOK_SECRET,
        "HUB_CHANNELS__APPRISE__URLS": json.dumps([f"json://127.0.0.1:{receiver.port}/apprise"]),
    }
    home = tmp_path_factory.mktemp("alerts")
    # Provider reports reach status webhooks too (hub.status_webhooks).
    status_hook = f"""
[[status_webhooks]]
url = "{receiver.url("/status")}"
secret = "{STATUS_SECRET}"
statuses = ["delivered"]
"""
    # Its own Redis database: the session's other stack must not take its tasks.
    with running_stack(
        home, other_redis_db(broker_url), smtp, env, port, extra_settings=EACH_ALERT + status_hook
    ) as stack:
        yield Peers(stack, twilio, receiver)
    receiver.stop()
    twilio.stop()


def phone() -> tuple[str, str]:
    """A US number as a user types it, and its E.164 form."""
    line = f"{uuid.uuid4().int % 10000:04d}"
    return f"(415) 555-{line}", f"+1415555{line}"


def task_failed(**extra: str) -> dict[str, str]:
    return {
        "service": "billing",
        "task_name": "charge_card",
        "task_id": uuid.uuid4().hex,
        "exception": "TimeoutError",
        "message": "gateway did not answer",
        "severity": "critical",
        **extra,
    }


def test_a_user_with_a_phone_gets_an_email_and_an_sms(peers: Peers, smtp: SmtpSink) -> None:
    typed, e164 = phone()
    to = address()

    event = peers.stack.settled(peers.stack.publish("user.registered", user(to, phone=typed)))

    by_channel = {n["channel"]: n for n in event["notifications"]}
    assert set(by_channel) == {"email", "sms"}
    assert len(smtp.to(to)) == 1
    [request] = [r for r in peers.twilio.requests if r.form.get("To") == e164]
    assert request.form["From"] == "+14155550000"
    assert request.form["Body"] == f"Welcome, Ada Lovelace! Your account {to} is ready."
    assert request.form["StatusCallback"].endswith("/v1/callbacks/twilio")
    sms = by_channel["sms"]
    assert sms["status"] == "sent"
    assert sms["recipient"] == typed
    assert sms["provider_message_id"] == request.sid
    assert sms["segments"] == 1
    assert sms["details"] == {"to": e164, "encoding": "GSM-7"}


def test_a_phone_that_is_no_number_fails_as_invalid_address_before_twilio(peers: Peers) -> None:
    asked_before = len(peers.twilio.requests)

    event = peers.stack.settled(
        peers.stack.publish("user.registered", user(address(), phone="call me\r\nmaybe"))
    )

    [sms] = [n for n in event["notifications"] if n["channel"] == "sms"]
    assert sms["status"] == "failed"
    assert sms["last_error"].startswith("invalid_address: ")
    assert [a["outcome"] for a in sms["attempt_log"]] == ["failed"]
    assert len(peers.twilio.requests) == asked_before


def test_a_user_without_a_phone_gets_no_sms(peers: Peers) -> None:
    event = peers.stack.settled(peers.stack.publish("user.registered", user(address())))

    assert [n["channel"] for n in event["notifications"]] == ["email"]


def callback(
    peers: Peers,
    form: dict[str, str],
    token: str | None = None,
    path: str = "/v1/callbacks/twilio",
) -> httpx.Response:
    # Twilio signs the URL it was given (channels.sms.status_callback_url).
    signed_url = f"{peers.stack.base_url}/v1/callbacks/twilio"
    validator = RequestValidator(token or peers.twilio.auth_token)
    signature = validator.compute_signature(signed_url, form)
    return httpx.post(
        f"{peers.stack.base_url}{path}", data=form, headers={"X-Twilio-Signature": signature}
    )


def sent_sms(peers: Peers) -> dict[str, object]:
    typed, _ = phone()
    event = peers.stack.settled(
        peers.stack.publish("user.registered", user(address(), phone=typed))
    )
    return next(n for n in event["notifications"] if n["channel"] == "sms")


def test_a_signed_status_callback_marks_the_sms_delivered(peers: Peers) -> None:
    sms = sent_sms(peers)
    form = {"MessageSid": str(sms["provider_message_id"]), "MessageStatus": "delivered"}

    response = callback(peers, form)

    assert response.status_code == 204
    event_id = peers.stack.event(_event_of(peers, sms))["notifications"]
    assert {n["id"]: n["status"] for n in event_id}[sms["id"]] == "delivered"


def test_a_provider_report_of_delivered_reaches_the_status_webhook_signed(
    peers: Peers,
) -> None:
    sms = sent_sms(peers)
    form = {"MessageSid": str(sms["provider_message_id"]), "MessageStatus": "delivered"}

    assert callback(peers, form).status_code == 204

    def reported() -> list[dict[str, object]]:
        bodies = [json.loads(r.body) for r in peers.received("/status")]  # type: ignore[attr-defined]
        return [b for b in bodies if b["notification_id"] == sms["id"]]

    [report] = wait_until(reported, what="the delivered report")
    assert (report["status"], report["id"], report["channel"]) == (
        "delivered",
        f"{sms['id']}.delivered",
        "sms",
    )
    [request] = [r for r in peers.received("/status") if sms["id"] in r.body.decode()]  # type: ignore[attr-defined]
    webhooks.verify(STATUS_SECRET, request.body, request.headers["X-Hub-Signature"])


def test_the_channel_and_provider_path_takes_the_same_reports(peers: Peers) -> None:
    sms = sent_sms(peers)
    form = {"MessageSid": str(sms["provider_message_id"]), "MessageStatus": "delivered"}

    response = callback(peers, form, path="/v1/callbacks/sms/default")

    assert response.status_code == 204
    notes = peers.stack.event(_event_of(peers, sms))["notifications"]
    assert [n["status"] for n in notes if n["id"] == sms["id"]] == ["delivered"]


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/v1/callbacks/sms/backup", "no sms provider 'backup'"),
        ("/v1/callbacks/email/default", "no callbacks for channel 'email'"),
        ("/v1/callbacks/pigeon/default", "no callbacks for channel 'pigeon'"),
    ],
)
def test_callbacks_for_an_unknown_provider_or_channel_are_404(
    peers: Peers, path: str, detail: str
) -> None:
    response = callback(peers, {"MessageSid": "SM1", "MessageStatus": "delivered"}, path=path)

    assert (response.status_code, response.json()["detail"]) == (404, detail)


def test_a_callback_body_that_is_not_utf8_is_refused_not_a_500(peers: Peers) -> None:
    response = httpx.post(
        f"{peers.stack.base_url}/v1/callbacks/twilio",
        content=b"MessageSid=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 403


def _event_of(peers: Peers, notification: dict[str, object]) -> str:
    with peers.stack.client() as http:
        params = {"channel": "sms", "limit": 1000, "order": "desc"}
        listed = http.get("/v1/notifications", params=params).json()
    return next(n["event_id"] for n in listed["items"] if n["id"] == notification["id"])


def test_a_failed_report_marks_the_sms_undelivered_with_the_error(peers: Peers) -> None:
    sms = sent_sms(peers)
    form = {
        "MessageSid": str(sms["provider_message_id"]),
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
    }

    assert callback(peers, form).status_code == 204

    notes = peers.stack.event(_event_of(peers, sms))["notifications"]
    [reported] = [n for n in notes if n["id"] == sms["id"]]
    assert (reported["status"], reported["last_error"]) == ("undelivered", "twilio error 30003")


def test_a_callback_with_a_bad_signature_is_403_and_changes_nothing(peers: Peers) -> None:
    sms = sent_sms(peers)
    form = {"MessageSid": str(sms["provider_message_id"]), "MessageStatus": "delivered"}

    response = callback(peers, form, token="not-the-token")

    assert response.status_code == 403
    notes = peers.stack.event(_event_of(peers, sms))["notifications"]
    assert [n["status"] for n in notes if n["id"] == sms["id"]] == ["sent"]


def test_stop_from_the_recipient_fails_the_sms_and_suppresses_later_ones(peers: Peers) -> None:
    typed, e164 = phone()
    peers.twilio.script(
        e164, Reply(status=400, code=21610, message="Attempt to send to unsubscribed recipient")
    )

    first = peers.stack.settled(
        peers.stack.publish("user.registered", user(address(), phone=typed))
    )
    second = peers.stack.settled(
        peers.stack.publish("user.registered", user(address(), phone=typed))
    )

    [failed] = [n for n in first["notifications"] if n["channel"] == "sms"]
    [suppressed] = [n for n in second["notifications"] if n["channel"] == "sms"]
    assert failed["status"] == "failed" and "21610" in failed["last_error"]
    assert suppressed["status"] == "suppressed" and "opted out" in suppressed["last_error"]
    assert len([r for r in peers.twilio.requests if r.form.get("To") == e164]) == 1


def test_a_twilio_20500_is_held_as_unknown_not_resent(peers: Peers) -> None:
    typed, e164 = phone()
    peers.twilio.script(e164, Reply(status=500, code=20500, message="Internal Server Error"))

    event = peers.stack.settled(
        peers.stack.publish("user.registered", user(address(), phone=typed))
    )

    [sms] = [n for n in event["notifications"] if n["channel"] == "sms"]
    assert sms["status"] == "unknown"
    assert sms["attempts"] == 1
    assert len([r for r in peers.twilio.requests if r.form.get("To") == e164]) == 1


def test_task_failed_reaches_slack_the_signed_webhook_and_apprise(peers: Peers) -> None:
    data = task_failed()

    event = peers.stack.settled(peers.stack.publish("task.failed", data))

    assert sorted(n["channel"] for n in event["notifications"]) == ["apprise", "slack", "webhook"]
    assert all(n["status"] == "sent" for n in event["notifications"])
    slack = _one(peers, "/slack", data["task_id"])
    payload = json.loads(slack.body)
    assert "charge_card" in payload["text"]
    [attachment] = payload["attachments"]
    assert attachment["blocks"][0]["type"] == "header"
    hook = _one(peers, "/hook", data["task_id"])
    webhooks.verify(WEBHOOK_SECRET, hook.body, hook.headers["X-Hub-Signature"])
    body = json.loads(hook.body)
    assert (body["event"], body["id"], body["data"]) == ("task.failed", event["id"], data)
    assert "gateway did not answer" in body["text"]
    apprise = _one(peers, "/apprise", data["task_id"])
    assert "charge_card" in json.loads(apprise.body)["title"]


def _one(peers: Peers, path: str, marker: str):  # type: ignore[no-untyped-def]
    def found():  # type: ignore[no-untyped-def]
        return [r for r in peers.received(path) if marker.encode() in r.body]  # type: ignore[attr-defined]

    [request] = wait_until(found, what=f"a request to {path} about {marker}")
    return request


def test_a_slack_429_is_retried_no_sooner_than_retry_after(peers: Peers) -> None:
    peers.receiver.script(
        Response(status=429, headers={"Retry-After": "1"}, body=b"rate_limited"), path="/slack"
    )
    data = task_failed()

    event = peers.stack.settled(peers.stack.publish("task.failed", data))

    [slack] = [n for n in event["notifications"] if n["channel"] == "slack"]
    assert slack["status"] == "sent"
    assert [a["outcome"] for a in slack["attempt_log"]] == ["transient", "sent"]
    first, second = (a["started_at"] for a in slack["attempt_log"])
    gap = datetime.fromisoformat(second) - datetime.fromisoformat(first)
    assert gap.total_seconds() >= 1.0


def test_a_failed_alert_about_a_failure_raises_no_further_alert(peers: Peers) -> None:
    # Every webhook call now fails for good: the task.failed alert fails, the
    # notification.failed alert about it fails too, and that must be the end.
    peers.receiver.script(*[Response(status=410, body=b"gone")] * 2, path="/hook")

    event = peers.stack.settled(peers.stack.publish("task.failed", task_failed()))
    [hook] = [n for n in event["notifications"] if n["channel"] == "webhook"]
    alert = peers.stack.settled(wait_until(lambda: announced(peers, hook["id"]), what="alert").id)
    [alert_hook] = [n for n in alert["notifications"] if n["channel"] == "webhook"]

    assert hook["status"] == alert_hook["status"] == "failed"
    assert alert["type"] == "notification.failed"
    # A negative claim needs a window: nothing about the failed alert appears in it.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert announced(peers, alert_hook["id"]) is None
        time.sleep(0.1)


def announced(peers: Peers, notification_id: str) -> Event | None:
    """The notification.failed event the hub published about ``notification_id``, if any."""
    with session(peers.stack.database_url) as db:
        return db.scalar(
            select(Event).where(Event.idempotency_key.startswith(f"failed:{notification_id}:"))
        )
