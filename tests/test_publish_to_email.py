"""Spec: an event published over HTTP becomes exactly one rendered email, via Redis and a worker."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Stack
from tests.smtp_sink import SmtpSink


def user(email: str, **extra: str) -> dict[str, str]:
    return {"user_id": uuid.uuid4().hex[:8], "email": email, "name": "Ada Lovelace", **extra}


def address(prefix: str = "ada") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def test_user_registered_is_delivered_as_one_rendered_multipart_email(
    stack: Stack, smtp: SmtpSink
) -> None:
    to = address()
    event_id = stack.publish("user.registered", user(to))

    event = stack.settled(event_id)

    [email] = smtp.to(to)
    assert email["Subject"] == "Welcome, Ada Lovelace!"
    assert email["To"] == to
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert "Hi Ada Lovelace," in text and to in text and event_id in text
    assert "<h1" in html and "Welcome, Ada Lovelace!" in html
    [notification] = event["notifications"]
    assert notification["status"] == "sent"
    assert notification["channel"] == "email"
    assert notification["recipient"] == to
    assert notification["attempts"] == 1
    assert notification["provider_message_id"] == email["Message-ID"]
    assert [a["outcome"] for a in notification["attempt_log"]] == ["sent"]


def test_html_part_escapes_event_data(stack: Stack, smtp: SmtpSink) -> None:
    to = address()
    stack.settled(stack.publish("user.registered", {**user(to), "name": "<script>x</script>"}))

    [email] = smtp.to(to)
    html = email.get_body(("html",)).get_content()
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "<script>x</script>" in email.get_body(("plain",)).get_content()


def test_optional_phone_is_rendered_when_present(stack: Stack, smtp: SmtpSink) -> None:
    to = address()
    stack.settled(stack.publish("user.registered", user(to, phone="+14155550100")))

    [email] = smtp.to(to)
    assert "+14155550100" in email.get_body(("plain",)).get_content()


def test_republishing_the_same_id_answers_the_first_event_and_sends_once(
    stack: Stack, smtp: SmtpSink
) -> None:
    to, key = address(), f"signup-{uuid.uuid4()}"
    event = {"type": "user.registered", "id": key, "data": user(to)}
    with stack.client() as http:
        first = http.post("/v1/events", json=event)
        second = http.post("/v1/events", json=event)

    assert first.status_code == second.status_code == 202
    assert first.json() == {"id": first.json()["id"], "status": "accepted", "duplicate": False}
    assert second.json() == {"id": first.json()["id"], "status": "accepted", "duplicate": True}
    event = stack.settled(first.json()["id"])
    assert len(event["notifications"]) == 1
    assert len(smtp.to(to)) == 1


def test_a_template_missing_a_variable_fails_the_notification_and_sends_nothing(
    stack: Stack, smtp: SmtpSink
) -> None:
    to = address()
    event = stack.settled(stack.publish("test.broken", {"email": to}))

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert "broken" in notification["last_error"] and "nope" in notification["last_error"]
    assert notification["attempts"] == 1
    assert smtp.to(to) == []


def test_smtp_5xx_fails_the_notification_at_once(stack: Stack, smtp: SmtpSink) -> None:
    to = address("reject")
    event = stack.settled(stack.publish("user.registered", user(to)))

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["attempts"] == 1
    assert "550" in notification["last_error"]
    assert smtp.tries[to] == 1
    assert smtp.to(to) == []


def test_smtp_4xx_is_retried_with_backoff_until_accepted(stack: Stack, smtp: SmtpSink) -> None:
    to = address("busy2")
    event = stack.settled(stack.publish("user.registered", user(to)))

    [notification] = event["notifications"]
    assert notification["status"] == "sent"
    assert notification["attempts"] == 3
    assert [a["outcome"] for a in notification["attempt_log"]] == ["transient", "transient", "sent"]
    assert "451" in notification["attempt_log"][0]["error"]
    assert len(smtp.to(to)) == 1


def test_smtp_4xx_gives_up_after_max_attempts(stack: Stack, smtp: SmtpSink) -> None:
    to = address("busy9")
    event = stack.settled(stack.publish("user.registered", user(to)))

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["attempts"] == 3  # HUB_DELIVERY__MAX_ATTEMPTS in the test stack
    assert "gave up after 3 attempts" in notification["last_error"]
    assert smtp.to(to) == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer hub_not-a-real-key"}, {"Authorization": "Basic abc"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_publishing_without_a_valid_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    import httpx

    response = httpx.post(
        f"{stack.base_url}/v1/events",
        json={"type": "user.registered", "data": user(address())},
        headers=headers,
    )

    assert response.status_code == 401
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"user_id": "1", "name": "Ada"}, ["body", "data", "email"]),
        ({"user_id": "1", "name": "Ada", "email": 42}, ["body", "data", "email"]),
        ({"user_id": "1", "name": "Ada", "email": "not-an-address"}, ["body", "data", "email"]),
        ({"user_id": "", "name": "Ada", "email": "a@b.c"}, ["body", "data", "user_id"]),
    ],
    ids=["missing", "wrong-type", "bad-format", "empty"],
)
def test_invalid_event_data_is_422_naming_the_field(
    stack: Stack, data: dict[str, object], loc: list[str]
) -> None:
    with stack.client() as http:
        response = http.post("/v1/events", json={"type": "user.registered", "data": data})

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [loc]


def test_unknown_event_type_is_422_listing_the_known_types(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post("/v1/events", json={"type": "user.exploded", "data": {}})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "type"]
    assert "user.exploded" in error["msg"]
    assert "task.failed" in error["msg"] and "user.registered" in error["msg"]


def test_malformed_envelope_is_422_naming_the_field(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post("/v1/events", json={"type": "user.registered", "data": [], "extra": 1})

    assert response.status_code == 422
    locs = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert locs == {("body", "data"), ("body", "extra")}


def test_unknown_event_id_is_404(stack: Stack) -> None:
    with stack.client() as http:
        response = http.get("/v1/events/evt_missing")

    assert response.status_code == 404
