"""Spec: POST /v1/events:batch answers each event on its own and delivers the accepted ones."""

from __future__ import annotations

import uuid

from tests.conftest import Stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def test_a_batch_reports_each_event_and_delivers_the_accepted_ones(
    stack: Stack, smtp: SmtpSink
) -> None:
    good = [address() for _ in range(3)]
    key, earlier_key = f"b-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    earlier_data = user(address())
    earlier = stack.publish("user.registered", earlier_data, id=earlier_key)
    first = {"type": "user.registered", "data": user(good[0]), "id": key}
    batch = [
        first,
        {"type": "user.registered", "data": user(good[1])},
        {"type": "user.registered", "data": {"user_id": "1", "name": "No Email"}},
        {"data": user(address())},
        first,  # the same id and payload: a duplicate of item 0
        {"type": "user.registered", "data": earlier_data, "id": earlier_key},
        {"type": "user.registered", "data": user(good[2])},
        {"type": "user.registered", "data": user(address()), "id": key},  # another payload
    ]

    with stack.client() as http:
        response = http.post("/v1/events:batch", json={"events": batch})

    assert response.status_code == 202
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == [
        "accepted", "accepted", "rejected", "rejected", "accepted", "accepted", "accepted",
        "rejected",
    ]  # fmt: skip
    assert (body["accepted"], body["rejected"]) == (5, 3)
    assert [e["loc"] for e in results[2]["errors"]] == [["body", "events", 2, "data", "email"]]
    assert [e["loc"] for e in results[3]["errors"]] == [["body", "events", 3, "type"]]
    assert [(e["loc"], e["type"]) for e in results[7]["errors"]] == [
        (["body", "events", 7, "id"], "idempotency_conflict")
    ]
    assert results[4] == {**results[0], "index": 4, "duplicate": True}
    assert (results[5]["id"], results[5]["duplicate"]) == (earlier, True)
    smtp.wait_for(lambda sink: all(len(sink.to(to)) == 1 for to in good))
    for result in (results[0], results[1], results[6]):
        assert [n["status"] for n in stack.settled(result["id"])["notifications"]] == ["sent"]


def test_a_batch_with_nothing_valid_is_422_with_every_reason(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post(
            "/v1/events:batch", json={"events": [{"type": "nope", "data": {}}, {"type": 1}]}
        )

    assert response.status_code == 422
    assert [r["status"] for r in response.json()["results"]] == ["rejected", "rejected"]


def test_more_than_1000_events_is_422(stack: Stack) -> None:
    events = [{"type": "user.registered", "data": user(address())}] * 1001

    with stack.client() as http:
        response = http.post("/v1/events:batch", json={"events": events})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events"]
