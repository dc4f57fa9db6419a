"""Spec: one bad event never holds up others; an event that keeps failing routing is quarantined.

Whatever the API accepts can be decoded by every worker, so an undecodable
event can only come from outside the publish path (an older hub, a hand-made
row); it is made here by writing the row directly.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from celery import Celery
from sqlalchemy import text

from hub.store.db import engine
from tests.conftest import Stack, wait_until
from tests.test_publish_to_email import address, user


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


def task_failed(**extra: Any) -> dict[str, Any]:
    required = {"service": "s", "task_name": "t", "task_id": "1", "exception": "E", "message": "m"}
    return required | extra


def test_data_nested_deeper_than_32_levels_is_refused_naming_the_field(stack: Stack) -> None:
    def publish(data: dict[str, Any]) -> httpx.Response:
        with stack.client() as http:
            return http.post("/v1/events", json={"type": "task.failed", "data": data})

    # The data object is level 1, so its context adds one level.
    deep = publish(task_failed(context=nested(32)))
    fine = publish(task_failed(context=nested(31)))

    assert deep.status_code == 422
    [error] = deep.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "data"], "limit_exceeded")
    assert fine.status_code == 202


def test_a_batch_with_one_deeply_nested_event_accepts_the_others(stack: Stack) -> None:
    events = [
        {"type": "task.failed", "data": task_failed()},
        {"type": "task.failed", "data": task_failed(context=nested(100))},
    ]
    with stack.client() as http:
        answer = http.post("/v1/events:batch", json={"events": events}).json()

    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
    assert answer["results"][1]["errors"][0]["type"] == "limit_exceeded"


def _stored_event(stack: Stack, data_json: str) -> str:
    [event_id] = _stored_events(stack, [data_json])
    return event_id


def _stored_events(
    stack: Stack, data_json: list[str], status: str = "accepted", age_s: float = 0.0
) -> list[str]:
    """Rows written directly, ``age_s`` old (as SQLAlchemy stores UTC times on SQLite)."""
    created = (datetime.now(UTC) - timedelta(seconds=age_s)).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = [
        {"id": f"evt_{uuid.uuid4().hex}", "data": data, "status": status, "created": created}
        for data in data_json
    ]
    with engine(stack.database_url).begin() as db:
        db.execute(
            text(
                "INSERT INTO events (id, type, data, status, created_at, routing_attempts) "
                "VALUES (:id, 'user.registered', :data, :status, :created, 0)"
            ),
            rows,
        )
    return [row["id"] for row in rows]


def _state(stack: Stack, event_id: str) -> tuple[str, int, str | None]:
    with engine(stack.database_url).connect() as db:
        row = db.execute(
            text("SELECT status, routing_attempts, error FROM events WHERE id = :id"),
            {"id": event_id},
        ).one()
    return row.status, row.routing_attempts, row.error


def test_an_undecodable_event_fails_alone_and_is_quarantined_after_five_routings(
    stack: Stack,
) -> None:
    # Given an event no worker can decode, stored next to a good one
    bad = _stored_event(stack, '{"a":' * 5000 + "1" + "}" * 5000)
    to = address("poison-neighbour")
    good = _stored_event(stack, json.dumps(user(to)))
    celery = Celery(broker=stack.env["HUB_BROKER_URL"])

    # When both are routed in one group
    celery.send_task("hub.route_many", args=[[bad, good]], queue="events")

    # Then the good one is delivered and the bad one counts a failed routing
    [sent] = stack.settled(good)["notifications"]
    assert sent["status"] == "sent"
    wait_until(lambda: _state(stack, bad)[1] == 1, what="the failed routing to be counted")
    assert _state(stack, bad)[0] == "accepted"
    assert "data cannot be decoded" in (_state(stack, bad)[2] or "")

    # When the sweeper routes it again, until the fifth failure (delivery.max_routing_attempts)
    for attempt in range(2, 6):
        celery.send_task("hub.route_many", args=[[bad]], queue="events")
        wait_until(lambda: _state(stack, bad)[1] == attempt, what=f"failed routing {attempt}")  # noqa: B023

    # Then it is quarantined with its error, kept, and no longer swept
    assert _state(stack, bad)[0] == "quarantined"
    celery.close()


def test_a_quarantined_event_is_shown_with_its_state(stack: Stack) -> None:
    event_id = _stored_event(stack, json.dumps(user(address("shown"))))
    with engine(stack.database_url).begin() as db:
        db.execute(
            text("UPDATE events SET status = 'quarantined', error = 'boom' WHERE id = :id"),
            {"id": event_id},
        )

    with stack.client() as http:
        shown = http.get(f"/v1/events/{event_id}")

    assert shown.status_code == 200
    assert shown.json()["status"] == "quarantined"


def test_a_deep_body_the_json_parser_cannot_read_is_a_4xx_not_a_500(stack: Stack) -> None:
    body = '{"type": "task.failed", "data": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}"
    response = httpx.post(
        f"{stack.base_url}/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"},
    )

    assert 400 <= response.status_code < 500


def test_an_undecodable_quarantined_event_is_shown_with_its_error_instead_of_its_data(
    stack: Stack,
) -> None:
    event_id = _stored_event(stack, '{"a":' * 5000 + "1" + "}" * 5000)
    with engine(stack.database_url).begin() as db:
        db.execute(
            text("UPDATE events SET status = 'quarantined', error = :error WHERE id = :id"),
            {"id": event_id, "error": "RecursionError: maximum recursion depth exceeded"},
        )

    with stack.client() as http:
        shown = http.get(f"/v1/events/{event_id}")

    assert shown.status_code == 200
    body = shown.json()
    assert (body["status"], body["data"]) == ("quarantined", None)
    assert body["error"].startswith("RecursionError")


def test_a_thousand_quarantined_and_a_thousand_failing_events_do_not_hide_a_lost_one(
    stack: Stack,
) -> None:
    # Given, older than stuck_after_s: 1,000 quarantined events, 1,000 that
    # still fail routing, and, newest, one good event whose enqueue was lost
    undecodable = '{"a":' * 1500 + "1" + "}" * 1500
    hour = 3600.0
    quarantined = _stored_events(stack, [undecodable] * 1000, "quarantined", age_s=hour + 2)
    failing = _stored_events(stack, [undecodable] * 1000, age_s=hour + 1)
    [lost] = _stored_events(stack, [json.dumps(user(address("lost")))], age_s=hour)

    # When the sweeper runs once
    celery = Celery(broker=stack.env["HUB_BROKER_URL"])
    celery.send_task("hub.sweep", queue="events")
    celery.close()

    # Then the lost event is delivered, the failing ones counted one more
    # failure, and the quarantined ones were left alone
    [sent] = stack.settled(lost, timeout_s=120)["notifications"]
    assert sent["status"] == "sent"
    wait_until(
        lambda: all(_state(stack, event_id)[1] == 1 for event_id in failing[::50]),
        timeout_s=60,
        what="the failing events to be routed again",
    )
    assert {_state(stack, event_id)[:2] for event_id in quarantined[::50]} == {("quarantined", 0)}
