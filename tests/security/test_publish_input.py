"""Spec: what a publish may carry, and honest idempotency.

NUL and lone surrogates anywhere in ``id``, ``type`` or ``data`` get 422 on
every store, never stripped; an ``id`` with control characters too. The same
``id`` with the same payload is a duplicate of the first event; with another
payload it is a 422 ``idempotency_conflict``. One bad item never fails
another item or another request.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.test_publish_to_email import address, user


def _post(stack: Stack, body: str, path: str = "/v1/events") -> httpx.Response:
    """POST a hand-written JSON body (json= cannot carry a lone surrogate)."""
    with stack.client() as http:
        return http.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def _only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return dict(error)


@pytest.mark.parametrize(
    ("field", "escaped", "kind"),
    [
        ("id", r"abc\u0000def", "invalid_character"),
        # Lone surrogates in a declared string field are refused by pydantic itself.
        ("id", r"abc\ud800", "string_unicode"),
        ("type", r"user.registered\u0000", "invalid_character"),
        ("type", r"user.\udfffregistered", "string_unicode"),
    ],
)
def test_nul_and_lone_surrogates_in_id_or_type_are_refused(
    stack: Stack, field: str, escaped: str, kind: str
) -> None:
    body = {"type": "user.registered", "data": user(address("nul")), "id": "x"}
    text = json.dumps(body).replace(f'"{body[field]}"', f'"{escaped}"')

    error = _only_error(_post(stack, text))

    assert (error["loc"], error["type"]) == (["body", field], kind)


@pytest.mark.parametrize("escaped", [r"Ada\u0000", r"Ada\ud83d", r"\udc00"])
def test_nul_and_lone_surrogates_in_data_are_refused_naming_the_field(
    stack: Stack, escaped: str
) -> None:
    data = user(address("surrogate"))
    text = json.dumps({"type": "user.registered", "data": data}).replace(
        f'"{data["name"]}"', f'"{escaped}"'
    )

    error = _only_error(_post(stack, text))

    assert (error["loc"], error["type"]) == (["body", "data", "name"], "invalid_character")


def test_an_id_with_control_characters_is_refused(stack: Stack) -> None:
    body = {"type": "user.registered", "data": user(address("ctl")), "id": "order\r\n42"}

    error = _only_error(_post(stack, json.dumps(body)))

    assert (error["loc"], error["type"]) == (["body", "id"], "invalid_character")


def test_emoji_and_rtl_marks_are_valid_data(stack: Stack) -> None:
    data = user(address("emoji"), name="Ada \u200f\u05e9\u05dc\u05d5\u05dd 🚀")

    event = stack.settled(stack.publish("user.registered", data))

    assert [n["status"] for n in event["notifications"]] == ["sent"]


def test_the_same_id_and_payload_is_the_first_event(stack: Stack) -> None:
    key, data = f"order-{uuid.uuid4().hex}", user(address("same"))
    with stack.client() as http:
        first = http.post("/v1/events", json={"type": "user.registered", "data": data, "id": key})
        again = http.post("/v1/events", json={"type": "user.registered", "data": data, "id": key})

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"id": first.json()["id"], "status": "accepted", "duplicate": True}


@pytest.mark.parametrize("change", ["data", "type"])
def test_the_same_id_with_another_payload_is_a_conflict(stack: Stack, change: str) -> None:
    key, data = f"order-{uuid.uuid4().hex}", user(address("conflict"))
    first = {"type": "user.registered", "data": data, "id": key}
    other = dict(first)
    if change == "data":
        other["data"] = {**data, "name": "Someone Else"}
    else:
        other["type"] = "task.failed"
        other["data"] = {
            "service": "s",
            "task_name": "t",
            "task_id": "1",
            "exception": "E",
            "message": "m",
        }
    with stack.client() as http:
        assert http.post("/v1/events", json=first).status_code == 202
        error = _only_error(http.post("/v1/events", json=other))

    assert (error["loc"], error["type"]) == (["body", "id"], "idempotency_conflict")


def test_the_idempotency_key_header_is_the_same_as_the_id(stack: Stack) -> None:
    key, data = f"order-{uuid.uuid4().hex}", user(address("header"))
    with stack.client() as http:
        by_body = http.post("/v1/events", json={"type": "user.registered", "data": data, "id": key})
        by_header = http.post(
            "/v1/events",
            json={"type": "user.registered", "data": data},
            headers={"Idempotency-Key": key},
        )

    assert by_header.json() == {"id": by_body.json()["id"], "status": "accepted", "duplicate": True}


def test_repeated_ids_in_a_batch_racing_a_publish_are_answered_with_the_stored_event(
    stack: Stack,
) -> None:
    # Given a batch that repeats one id, and a single publish of the same
    # event racing it, many times over
    for _ in range(10):
        key, data = f"race-{uuid.uuid4().hex}", user(address("race"))
        event = {"type": "user.registered", "data": data, "id": key}
        single: list[httpx.Response] = []
        racer = threading.Thread(
            target=lambda: single.append(_post(stack, json.dumps(event)))  # noqa: B023
        )
        racer.start()
        with stack.client() as http:
            batch = http.post("/v1/events:batch", json={"events": [event, event, event]})
        racer.join(10)

        # Then every answer names the one event stored, and it can be read back
        ids = {result["id"] for result in batch.json()["results"]} | {single[0].json()["id"]}
        assert len(ids) == 1
        with stack.client() as http:
            assert http.get(f"/v1/events/{ids.pop()}").status_code == 200


def test_one_bad_item_in_a_batch_is_rejected_alone(stack: Stack) -> None:
    good = [{"type": "user.registered", "data": user(address("good"))} for _ in range(2)]
    text = json.dumps(
        {"events": [good[0], {"type": "user.registered", "id": "x", "data": {}}, good[1]]}
    )
    text = text.replace('"id": "x"', r'"id": "bad\u0000id"')

    response = _post(stack, text, "/v1/events:batch")

    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["errors"][0]["type"] == "invalid_character"
    for result in (results[0], results[2]):
        stack.settled(result["id"])


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"type": "user.registered", "data": {', ["body", 37]),
        ("not json at all", ["body", 0]),
        ('{"type": 5, "data": {}}', ["body", "type"]),
        ('{"type": "user.registered", "data": [1, 2]}', ["body", "data"]),
        ('{"type": "user.registered", "data": {}, "extra": 1}', ["body", "extra"]),
        ("[]", ["body"]),
    ],
)
def test_malformed_json_and_wrong_types_get_422_naming_where(
    stack: Stack, body: str, loc: list[str | int]
) -> None:
    response = _post(stack, body)

    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
