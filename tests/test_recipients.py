"""Spec: recipients and topics, kept through the API and the CLI (admin scope).

``PUT /v1/recipients/{id}`` merges (a JSON Merge Patch): absent fields are
kept, ``null`` clears one, ``data`` and ``preferences`` merge key by key.
Every field is checked and normalised (email, E.164 phone, Slack id, IANA
time zone, locale, the preferences' shape); a 422 names each bad field.
``PUT /v1/recipients:batch`` takes up to 1,000 and answers each item alone.
A topic's ``PUT`` is a union of known recipients; its ``GET`` pages by cursor.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub import keys
from hub.store import recipients as stored
from hub.store.db import session
from hub.store.recipients import RecipientChange
from tests.conftest import Stack, run_hub


def new_id(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def put(http: httpx.Client, recipient_id: str, **fields: Any) -> httpx.Response:
    return http.put(f"/v1/recipients/{recipient_id}", json=fields)


def stored_recipient(stack: Stack, recipient_id: str) -> dict[str, Any]:
    with stack.client() as http:
        got = http.get(f"/v1/recipients/{recipient_id}")
    assert got.status_code == 200, got.text
    return dict(got.json())


def created(stack: Stack, count: int) -> list[str]:
    """``count`` new recipients' ids, stored through one batch."""
    ids = [new_id() for _ in range(count)]
    with stack.client() as http:
        answer = http.put("/v1/recipients:batch", json={"recipients": [{"id": id} for id in ids]})
    assert answer.status_code == 200, answer.text
    return ids


def members(stack: Stack, topic: str, **params: Any) -> httpx.Response:
    with stack.client() as http:
        return http.get(f"/v1/topics/{topic}", params=params)


def all_members(stack: Stack, topic: str, limit: int = 100) -> list[str]:
    """Every member's id, following ``next_cursor`` page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = members(stack, topic, **params)
        assert page.status_code == 200, page.text
        ids += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


def error_locs(response: httpx.Response) -> set[tuple[str | int, ...]]:
    assert response.status_code == 422, response.text
    return {tuple(error["loc"]) for error in response.json()["detail"]}


# One recipient: create, merge, clear, delete


def test_a_put_creates_a_recipient_with_its_fields_normalised(stack: Stack) -> None:
    recipient_id = new_id()

    with stack.client() as http:
        answer = put(
            http,
            recipient_id,
            email="ada@EXAMPLE.com",
            phone="(415) 555-2671",
            slack="U024BE7LH",
            locale="fr_ca",
            timezone="Europe/Paris",
            data={"plan": "pro"},
        )

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["email"] == "ada@example.com"
    assert body["phone"] == "+14155552671"  # E.164, read in channels.sms.default_region (US)
    assert body["locale"] == "fr-CA"
    assert body["created_at"].endswith("Z")
    assert stored_recipient(stack, recipient_id) == body


def test_a_second_put_keeps_absent_fields_and_null_clears_one(stack: Stack) -> None:
    recipient_id = new_id()
    with stack.client() as http:
        put(http, recipient_id, email="ada@example.com", phone="+14155552671", locale="en")

        answer = put(http, recipient_id, phone=None, timezone="America/New_York")

    assert answer.status_code == 200, answer.text
    after = stored_recipient(stack, recipient_id)
    assert after["email"] == "ada@example.com"
    assert after["locale"] == "en"
    assert after["phone"] is None
    assert after["timezone"] == "America/New_York"


def test_data_and_preferences_merge_key_by_key(stack: Stack) -> None:
    recipient_id = new_id()
    with stack.client() as http:
        put(
            http,
            recipient_id,
            data={"plan": "pro", "seats": 3},
            preferences={"channels": {"sms": False}},
        )

        put(
            http,
            recipient_id,
            data={"seats": None, "team": "infra"},
            preferences={"categories": {"marketing": False}},
        )

    after = stored_recipient(stack, recipient_id)
    assert after["data"] == {"plan": "pro", "team": "infra"}
    assert after["preferences"] == {
        "channels": {"sms": False},
        "categories": {"marketing": False},
    }


def test_null_data_or_preferences_clears_them_whole(stack: Stack) -> None:
    recipient_id = new_id()
    with stack.client() as http:
        put(
            http,
            recipient_id,
            data={"plan": "pro"},
            preferences={"quiet_hours": {"start": "22:00", "end": "07:00"}},
        )

        put(http, recipient_id, data=None, preferences=None)

    after = stored_recipient(stack, recipient_id)
    assert after["data"] == {}
    assert after["preferences"] == {}


def test_an_unknown_recipient_is_404(stack: Stack) -> None:
    with stack.client() as http:
        got = http.get(f"/v1/recipients/{new_id()}")
        deleted = http.delete(f"/v1/recipients/{new_id()}")

    assert got.status_code == deleted.status_code == 404


def test_delete_removes_the_recipient_and_its_topic_memberships(stack: Stack) -> None:
    topic = new_id("topic")
    [leaving, staying] = created(stack, 2)
    with stack.client() as http:
        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": [leaving, staying]})

        deleted = http.delete(f"/v1/recipients/{leaving}")

        assert deleted.status_code == 204
        assert http.get(f"/v1/recipients/{leaving}").status_code == 404
    assert all_members(stack, topic) == [staying]


# Validation


def test_each_invalid_field_is_named_and_nothing_is_stored(stack: Stack) -> None:
    recipient_id = new_id()

    with stack.client() as http:
        answer = put(
            http,
            recipient_id,
            email="not an address",
            phone="12",
            slack="https://hooks.slack.com/services/T000/B000/XXXX",
            locale="french!",
            timezone="Mars/Olympus_Mons",
            data=[1, 2],
            preferences={
                "channels": {"pigeon": False, "sms": "no"},
                "quiet_hours": {"start": "25:00"},
                "mood": {},
            },
            nickname="ada",
        )
        missing = http.get(f"/v1/recipients/{recipient_id}")

    assert error_locs(answer) == {
        ("body", "email"),
        ("body", "phone"),
        ("body", "slack"),
        ("body", "locale"),
        ("body", "timezone"),
        ("body", "data"),
        ("body", "preferences", "channels", "pigeon"),
        ("body", "preferences", "channels", "sms"),
        ("body", "preferences", "quiet_hours", "start"),
        ("body", "preferences", "quiet_hours", "end"),
        ("body", "preferences", "mood"),
        ("body", "nickname"),
    }
    messages = {error["loc"][-1]: error["msg"] for error in answer.json()["detail"]}
    assert "not a Slack member or channel id" in messages["slack"]
    assert "not a valid phone number" in messages["phone"]
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ('{"ratio": NaN}', "finite_number"),
        ('{"ratio": "Ada\\u0000"}', "invalid_character"),
        ('{"ratio": "\\udc00"}', "invalid_character"),
    ],
)
def test_data_no_store_could_keep_is_refused_naming_where(
    stack: Stack, data: str, kind: str
) -> None:
    with stack.client() as http:
        answer = http.put(
            f"/v1/recipients/{new_id()}",
            # By hand: json= writes neither NaN, nor a lone surrogate.
            content=f'{{"data": {data}}}',
            headers={"Content-Type": "application/json"},
        )

    assert error_locs(answer) == {("body", "data", "ratio")}
    assert answer.json()["detail"][0]["type"] == kind


def test_an_id_with_control_characters_or_over_200_characters_is_refused(stack: Stack) -> None:
    with stack.client() as http:
        control = http.put("/v1/recipients/ada%07bell", json={})
        long = http.put(f"/v1/recipients/{'x' * 201}", json={})
        longest = http.put(f"/v1/recipients/{'x' * 199}-", json={})

    assert error_locs(control) == error_locs(long) == {("path", "recipient_id")}
    assert longest.status_code == 201, longest.text


def test_an_id_may_hold_a_slash_and_unicode(stack: Stack) -> None:
    recipient_id = f"acme/{new_id()}/zoë"

    with stack.client() as http:
        answer = http.put(f"/v1/recipients/{recipient_id.replace('/', '%2F')}", json={})

    assert answer.status_code == 201, answer.text
    assert stored_recipient(stack, recipient_id)["id"] == recipient_id


# Batches


def test_a_batch_stores_the_valid_items_and_answers_each_invalid_one_alone(
    stack: Stack,
) -> None:
    good, bad_email, other_good = new_id(), new_id(), new_id()

    batch = [
        {"id": good, "email": "ada@example.com"},
        {"id": bad_email, "email": "ada at example"},
        {"email": "no-id@example.com"},
        {"id": "nul\u0000id"},
        {"id": "lone\ud800surrogate"},
        "not an object",
        {"id": other_good, "timezone": "Asia/Tokyo"},
    ]

    with stack.client() as http:
        answer = http.put(
            "/v1/recipients:batch",
            # Escaped by hand: json= cannot carry a lone surrogate.
            content=json.dumps({"recipients": batch}),
            headers={"Content-Type": "application/json"},
        )
        not_stored = http.get(f"/v1/recipients/{bad_email}")

    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(item["id"], item["status"]) for item in items] == [
        (good, "ok"),
        (bad_email, "invalid"),
        (None, "invalid"),
        (None, "invalid"),
        (None, "invalid"),
        (None, "invalid"),
        (other_good, "ok"),
    ]
    assert [error["loc"] for error in items[1]["errors"]] == [["body", "recipients", 1, "email"]]
    assert items[2]["errors"][0]["type"] == "missing"
    assert items[3]["errors"][0]["type"] == items[4]["errors"][0]["type"] == "invalid_character"
    assert stored_recipient(stack, other_good)["timezone"] == "Asia/Tokyo"
    assert not_stored.status_code == 404


def test_a_batch_of_1000_recipients_is_stored_in_one_request(stack: Stack) -> None:
    batch = [
        {
            "id": new_id(),
            "email": f"user{n}@example.com",
            "phone": f"+1415555{n:04d}",
            "timezone": "Europe/Berlin",
            "data": {"n": n},
            "preferences": {"categories": {"marketing": n % 2 == 0}},
        }
        for n in range(1000)
    ]

    with stack.client() as http:
        started = time.perf_counter()
        answer = http.put("/v1/recipients:batch", json={"recipients": batch}, timeout=60)
        elapsed_s = time.perf_counter() - started

    assert answer.status_code == 200, answer.text
    assert [item["status"] for item in answer.json()["items"]] == ["ok"] * 1000
    print(f"\n1,000 recipients in one batch: {elapsed_s * 1000:.0f} ms over HTTP")
    assert elapsed_s < 10  # about 0.2 s on a laptop; the bound only catches a row-by-row regression
    last = stored_recipient(stack, batch[-1]["id"])
    assert (last["phone"], last["data"]) == ("+14155550999", {"n": 999})


def test_a_batch_over_1000_is_refused_whole_as_limit_exceeded(stack: Stack) -> None:
    with stack.client() as http:
        answer = http.put(
            "/v1/recipients:batch", json={"recipients": [{"id": new_id()} for _ in range(1001)]}
        )

    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["type"] == "limit_exceeded"
    assert error["loc"] == ["body", "recipients"]


# Topics


def test_adding_members_is_a_union_and_adding_them_again_changes_nothing(stack: Stack) -> None:
    topic = new_id("topic")
    first, second, third = sorted(created(stack, 3))

    with stack.client() as http:
        added = [
            http.put(f"/v1/topics/{topic}/recipients", json={"recipients": ids}).json()["added"]
            for ids in ([first, second], [second, third], [third, second, third])
        ]

    assert added == [2, 1, 0]
    assert all_members(stack, topic) == [first, second, third]


def test_unknown_recipient_ids_are_listed_in_a_422_and_nothing_is_added(stack: Stack) -> None:
    topic = new_id("topic")
    [known] = created(stack, 1)
    ghosts = [new_id("ghost"), new_id("ghost")]

    with stack.client() as http:
        answer = http.put(f"/v1/topics/{topic}/recipients", json={"recipients": [known, *ghosts]})

    assert error_locs(answer) == {("body", "recipients", 1), ("body", "recipients", 2)}
    assert {error["type"] for error in answer.json()["detail"]} == {"unknown_recipient"}
    assert all(ghost in answer.text for ghost in ghosts)
    assert all_members(stack, topic) == []


def test_a_topic_lists_its_members_oldest_first_in_pages_joined_by_cursors(stack: Stack) -> None:
    topic = new_id("topic")
    early, late = sorted(created(stack, 150)), sorted(created(stack, 100))
    with stack.client() as http:
        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": early})
        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": late})

    first = members(stack, topic, limit=100).json()
    listed = all_members(stack, topic, limit=100)

    assert len(first["items"]) == 100
    assert first["next_cursor"] is not None
    assert listed == early + late
    assert first["items"][0]["added_at"].endswith("Z")


def test_members_joining_while_a_client_pages_are_neither_skipped_nor_repeated(
    stack: Stack,
) -> None:
    topic = new_id("topic")
    ids = sorted(created(stack, 30))
    newcomer = created(stack, 1)
    with stack.client() as http:
        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": ids})
        page = members(stack, topic, limit=20).json()

        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": newcomer})
        rest = members(stack, topic, limit=20, cursor=page["next_cursor"]).json()

    assert [m["id"] for m in page["items"] + rest["items"]] == ids + newcomer
    assert rest["next_cursor"] is None


def test_a_cursor_the_api_did_not_give_or_a_limit_over_1000_is_422(stack: Stack) -> None:
    assert error_locs(members(stack, "any", cursor="not-a-cursor")) == {("query", "cursor")}
    assert error_locs(members(stack, "any", limit=1001)) == {("query", "limit")}


def test_removing_a_member_leaves_the_recipient_and_a_second_removal_is_404(
    stack: Stack,
) -> None:
    topic = new_id("topic")
    [recipient_id] = created(stack, 1)
    with stack.client() as http:
        http.put(f"/v1/topics/{topic}/recipients", json={"recipients": [recipient_id]})

        removed = http.delete(f"/v1/topics/{topic}/recipients/{recipient_id}")
        again = http.delete(f"/v1/topics/{topic}/recipients/{recipient_id}")

        assert http.get(f"/v1/recipients/{recipient_id}").status_code == 200
    assert (removed.status_code, again.status_code) == (204, 404)
    assert all_members(stack, topic) == []


# Scopes


def test_recipients_and_topics_need_the_admin_scope(stack: Stack) -> None:
    key = keys.create_key(stack.database_url, new_id("reader"), scopes=["read", "publish:*"])
    [recipient_id] = created(stack, 1)
    calls = [
        ("PUT", f"/v1/recipients/{recipient_id}", {}),
        ("GET", f"/v1/recipients/{recipient_id}", None),
        ("DELETE", f"/v1/recipients/{recipient_id}", None),
        ("PUT", "/v1/recipients:batch", {"recipients": []}),
        ("PUT", "/v1/topics/news/recipients", {"recipients": [recipient_id]}),
        ("GET", "/v1/topics/news", None),
        ("DELETE", f"/v1/topics/news/recipients/{recipient_id}", None),
    ]

    with stack.client(key) as http:
        answers = [http.request(method, url, json=body) for method, url, body in calls]

    assert [answer.status_code for answer in answers] == [403] * len(calls)
    assert "'admin' scope" in answers[0].json()["detail"]


# CLI


def test_hub_recipients_import_stores_a_csv_and_names_each_bad_line(
    stack: Stack, tmp_path: Path
) -> None:
    ada, bob, eve = new_id(), new_id(), new_id()
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "id,email,phone,locale,data\n"
        f"{ada},ada@example.com,+14155552671,en,\n"
        f"{bob},bob at example,,,\n"
        f'{eve},eve@example.com,,fr,"{{""plan"": ""pro""}}"\n',
        encoding="utf-8",
    )

    result = run_hub(stack, "recipients", "import", str(csv_file))

    assert result.returncode == 2
    assert f"{csv_file}:3: email: " in result.stderr
    assert "imported 2 recipient(s)" in result.stderr
    assert stored_recipient(stack, ada)["phone"] == "+14155552671"
    assert stored_recipient(stack, eve)["data"] == {"plan": "pro"}


def test_hub_recipients_import_reads_json_lines_and_merges_into_stored_recipients(
    stack: Stack, tmp_path: Path
) -> None:
    ada = new_id()
    with stack.client() as http:
        put(http, ada, email="ada@example.com", data={"plan": "free"})
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text(
        json.dumps({"id": ada, "data": {"seats": 5}})
        + "\n{not json\n\n"
        + json.dumps({"id": ada, "timezone": "Nowhere/Atlantis"})
        + "\n",
        encoding="utf-8",
    )

    result = run_hub(stack, "recipients", "import", str(jsonl))

    assert result.returncode == 2
    assert f"{jsonl}:2: invalid JSON" in result.stderr
    assert f"{jsonl}:4: timezone: " in result.stderr
    assert stored_recipient(stack, ada)["data"] == {"plan": "free", "seats": 5}
    assert stored_recipient(stack, ada)["email"] == "ada@example.com"


def test_hub_topics_add_list_and_remove(stack: Stack) -> None:
    topic = new_id("topic")
    first, second = sorted(created(stack, 2))
    ghost = new_id("ghost")

    added = run_hub(stack, "topics", "add", topic, first, second)
    unknown = run_hub(stack, "topics", "add", topic, ghost)
    removed = run_hub(stack, "topics", "remove", topic, first)
    removed_again = run_hub(stack, "topics", "remove", topic, first)
    listed = run_hub(stack, "topics", "list", topic)

    assert added.returncode == 0, added.stderr
    assert unknown.returncode == 2
    assert ghost in unknown.stderr
    assert removed.returncode == 0, removed.stderr
    assert removed_again.returncode == 2
    assert "not a member" in removed_again.stderr
    assert listed.stdout.split() == [second]


# The store, on SQLite and PostgreSQL


def test_members_pages_through_a_topic_by_recipient_id(database_url: str) -> None:
    ids = [f"r{n:04d}" for n in range(2500)]
    with session(database_url) as db:
        stored.upsert_recipients(db, [RecipientChange(id, {}) for id in ids])
        stored.add_members(db, "everyone", reversed(ids))
        stored.add_members(db, "other", ids[:10])

    pages: list[list[str]] = []
    after = None
    while True:
        with session(database_url) as db:
            page = stored.members(db, "everyone", after, limit=1000)
        pages.append(page)
        if len(page) < 1000:
            break
        after = page[-1]

    assert [len(page) for page in pages] == [1000, 1000, 500]
    assert [id for page in pages for id in page] == ids


def test_recipients_by_id_answers_plain_rows_for_known_ids(database_url: str) -> None:
    ids = [f"r{n:04d}" for n in range(1200)]
    with session(database_url) as db:
        stored.upsert_recipients(
            db, [RecipientChange(id, {"email": f"{id}@example.com"}) for id in ids]
        )

    with session(database_url) as db:
        found = stored.recipients_by_id(db, [*ids, "nobody"])

    assert len(found) == 1200
    assert found["r0042"].email == "r0042@example.com"
    assert found["r0042"].data == {}


def test_concurrent_patches_of_one_recipient_keep_every_change(database_url: str) -> None:
    def patch(n: int) -> None:
        with session(database_url) as db:
            stored.upsert_recipients(db, [RecipientChange("ada", {"data": {f"k{n}": n}})])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(patch, range(16)))

    with session(database_url) as db:
        ada = stored.get_recipient(db, "ada")
    assert ada is not None
    assert ada.data == {f"k{n}": n for n in range(16)}


@pytest.mark.parametrize(
    ("target", "patch", "merged"),
    [
        ({"a": 1}, {"a": None}, {}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}, {"a": {"c": 2, "d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": "text"}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}),
    ],
)
def test_a_change_is_a_json_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], merged: dict[str, Any]
) -> None:
    assert stored.merge_patch(target, patch) == merged
