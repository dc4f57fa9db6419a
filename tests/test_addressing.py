"""Spec: an event may name its recipients and topics.

``"recipients": ["user-1", {"id": "user-2", "email": "b@example.com"}]`` names
stored recipients by id, or inline recipients that are stored as given (a
merge, like ``PUT /v1/recipients/{id}``); ``"topics": ["oncall"]`` names every
member of a topic. Both are part of what an idempotency key stands for, and a
bad entry gets 422 naming it.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Stack
from tests.test_publish_to_email import address, user


def _publish(stack: Stack, **body: Any) -> Any:
    with stack.client() as http:
        return http.post("/v1/events", json={"type": "user.registered", **body})


def test_an_inline_recipient_is_stored_with_the_event(stack: Stack) -> None:
    rid, email = f"user-{uuid.uuid4().hex[:8]}", address("inline")

    response = _publish(
        stack, data=user(email), recipients=[{"id": rid, "email": email, "locale": "fr"}]
    )

    assert response.status_code == 202, response.text
    with stack.client() as http:
        stored = http.get(f"/v1/recipients/{rid}").json()
    assert (stored["email"], stored["locale"]) == (email, "fr")


def test_a_bad_recipient_or_topic_is_refused_naming_it(stack: Stack) -> None:
    response = _publish(
        stack,
        data=user(address("bad-named")),
        recipients=["ok-id", {"id": "x", "email": "not an email"}],
        topics=["on/call"],
    )

    assert response.status_code == 422
    locs = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert ("body", "recipients", 1, "email") in locs
    assert ("body", "topics", 0) in locs


def test_the_same_id_naming_other_recipients_is_a_conflict(stack: Stack) -> None:
    key, data = f"named-{uuid.uuid4().hex}", user(address("named"))

    first = _publish(stack, id=key, data=data, recipients=["user-a"])
    again = _publish(stack, id=key, data=data, recipients=["user-a"])
    other = _publish(stack, id=key, data=data, recipients=["user-b"])

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["duplicate"] is True
    assert other.status_code == 422
    assert other.json()["detail"][0]["type"] == "idempotency_conflict"
