"""Spec: the alerts API, the signed ack link, silences and ``hub alerts``.

``GET /v1/alerts`` pages through alert groups in ``(created_at, id)`` order
(``read``); ``GET /v1/alerts/{id}`` shows a group with every event folded
into it and every notification sent for it, with attempts. ``POST
/v1/alerts/{id}/ack`` and ``/resolve`` (``admin``) record the key's name and
answer 409 when the group's status forbids it. The ack link takes no key: a
``GET`` shows the alert and a button, only the ``POST`` acknowledges, and a
token the hub did not sign gets 404. Silences are created, listed and ended
(never deleted), with matchers and times checked.

Groups are made in the stack's store with :func:`hub.store.alerts.record`,
as routing does, so these tests do not depend on routing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from hub import alerts, keys, links
from hub.settings import load_settings
from hub.store import alerts as stored
from hub.store import events as stored_events
from hub.store.db import session
from hub.store.models import Attempt, Event, EventStatus, utcnow
from hub.store.notifications import NewNotification, add_alert_notifications
from tests.conftest import Stack, run_hub


def _run() -> str:
    return uuid.uuid4().hex[:10]


def _group(stack: Stack, subscription: str, task: str = "charge", failures: int = 1) -> str:
    """An alert group of ``failures`` task.failed events, folded in as routing does."""
    events = [
        Event(
            id=f"evt_{uuid.uuid4().hex}",
            type="task.failed",
            # Routed already: the sweeper must not route these through the bundled subscriptions.
            status=EventStatus.ROUTED,
            data={
                "service": "billing",
                "task_name": task,
                "exception": "ValueError",
                "message": f"card declined {index % 2}",
            },
        )
        for index in range(failures)
    ]
    group_by = ["data.service", "data.task_name", "data.exception"]
    with session(stack.database_url) as db:
        stored_events.add_events(db, events)
        for event in events:
            group = stored.record(
                db,
                subscription,
                alerts.labels(group_by, {"type": event.type, "data": event.data}),
                event.id,
                alerts.message_of(event.data),
                utcnow(),
                30.0,
                300.0,
                None,
            )
    return group


def _acked(stack: Stack, group: str) -> None:
    with session(stack.database_url) as db:
        assert stored.acknowledge(db, group, "someone", utcnow())


def _ack_path(group: str) -> str:
    url = links.ack_url(load_settings(), group)
    return url[url.index(links.ACK_PATH) :]


def _get(stack: Stack, path: str, **params: Any) -> dict[str, Any]:
    with stack.client() as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _walk(stack: Stack, path: str, limit: int, **params: Any) -> list[list[str]]:
    """The ids of every page of ``path``, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        body = _get(stack, path, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


# ---- Listing and showing ---------------------------------------------------------------


def test_the_list_pages_through_every_group_in_creation_order(stack: Stack) -> None:
    subscription = f"alerts-{_run()}"
    made = [_group(stack, subscription, task=f"task-{index}") for index in range(5)]

    pages = _walk(stack, "/v1/alerts", 2, subscription=subscription)

    assert pages == [made[0:2], made[2:4], made[4:5]]


def test_a_list_item_carries_the_groups_state(stack: Stack) -> None:
    subscription = f"alerts-{_run()}"
    group = _group(stack, subscription, failures=3)

    [item] = _get(stack, "/v1/alerts", subscription=subscription)["items"]

    assert item["id"] == group
    assert item["status"] == "firing"
    assert item["count"] == 3
    assert item["labels"] == {
        "data.service": "billing",
        "data.task_name": "charge",
        "data.exception": "ValueError",
    }
    assert item["messages"] == ["card declined 0", "card declined 1"]
    assert item["first_seen"].endswith("Z") and item["created_at"].endswith("Z")
    assert item["acknowledged_at"] is None and item["resolved_by"] is None
    assert item["silence_id"] is None
    assert (item["notifications_sent"], item["escalation_step"]) == (0, 0)


def test_limit_is_bounded_and_a_foreign_cursor_is_refused(stack: Stack) -> None:
    with stack.client() as http:
        too_small = http.get("/v1/alerts", params={"limit": 0})
        too_big = http.get("/v1/alerts", params={"limit": 1001})
        largest = http.get("/v1/alerts", params={"limit": 1000})
        forged = http.get("/v1/alerts", params={"cursor": "not-a-cursor"})

    assert too_small.status_code == too_big.status_code == 422
    assert too_big.json()["detail"][0]["loc"] == ["query", "limit"]
    assert largest.status_code == 200
    assert forged.status_code == 422
    assert forged.json()["detail"][0]["type"] == "invalid_cursor"


def test_the_status_filter_lists_only_that_status(stack: Stack) -> None:
    subscription = f"alerts-{_run()}"
    firing = _group(stack, subscription, task="a")
    acked = _group(stack, subscription, task="b")
    _acked(stack, acked)

    def listed(status: str) -> list[str]:
        body = _get(stack, "/v1/alerts", subscription=subscription, status=status)
        return [item["id"] for item in body["items"]]

    assert listed("firing") == [firing]
    assert listed("acknowledged") == [acked]
    assert listed("resolved") == []
    with stack.client() as http:
        unknown = http.get("/v1/alerts", params={"status": "burning"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["query", "status"]


def test_show_gives_every_event_and_every_notification_with_its_attempts(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}", failures=3)
    with session(stack.database_url) as db:
        first = stored.groups(db, [group])[group].first_event_id
        notification = NewNotification(
            id=f"ntf_{uuid.uuid4().hex}",
            event_id=first,
            subscription="oncall",
            channel="slack",
            recipient="#oncall",
            template="task.failed",
            alert_id=group,
        )
        add_alert_notifications(db, [notification])
        db.add(Attempt(notification_id=notification.id, number=1, outcome="transient", error="503"))

    shown = _get(stack, f"/v1/alerts/{group}")

    assert shown["id"] == group and shown["count"] == 3
    assert len(shown["events"]) == 3
    assert shown["events"][0]["id"] == first
    assert {event["type"] for event in shown["events"]} == {"task.failed"}
    [sent] = shown["notifications"]
    assert (sent["id"], sent["channel"], sent["event_id"]) == (notification.id, "slack", first)
    assert [(a["number"], a["outcome"], a["error"]) for a in sent["attempt_log"]] == [
        (1, "transient", "503")
    ]


def test_show_of_an_unknown_alert_is_404_naming_it(stack: Stack) -> None:
    with stack.client() as http:
        response = http.get("/v1/alerts/alr_nope")

    assert response.status_code == 404
    assert "alr_nope" in response.json()["detail"]


# ---- Acknowledging and resolving -------------------------------------------------------


def test_ack_records_the_keys_name_and_a_second_ack_is_409(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")

    with stack.client() as http:
        first = http.post(f"/v1/alerts/{group}/ack")
        second = http.post(f"/v1/alerts/{group}/ack")
        unknown = http.post("/v1/alerts/alr_nope/ack")

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "acknowledged"
    assert first.json()["acknowledged_by"] == "tests"
    assert first.json()["acknowledged_at"].endswith("Z")
    assert second.status_code == 409
    assert "acknowledged" in second.json()["detail"]
    assert unknown.status_code == 404


def test_resolve_records_the_keys_name_and_resolving_again_is_409(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")
    _acked(stack, group)  # an acknowledged group can still be resolved

    with stack.client() as http:
        first = http.post(f"/v1/alerts/{group}/resolve")
        second = http.post(f"/v1/alerts/{group}/resolve")
        ack_after = http.post(f"/v1/alerts/{group}/ack")

    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["resolved_by"]) == ("resolved", "tests")
    assert second.status_code == 409
    assert ack_after.status_code == 409


def test_a_read_key_lists_but_cannot_ack_and_no_key_gets_401(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")
    reader = keys.create_key(stack.database_url, f"reader-{_run()}", [keys.READ])

    with stack.client(reader) as http:
        listed = http.get("/v1/alerts", params={"limit": 1})
        acked = http.post(f"/v1/alerts/{group}/ack")
        silenced = http.post("/v1/silences", json=_silence())
    with httpx.Client(base_url=stack.base_url) as anonymous:
        without_key = anonymous.get("/v1/alerts")

    assert listed.status_code == 200
    assert acked.status_code == silenced.status_code == 403
    assert without_key.status_code == 401
    assert _get(stack, f"/v1/alerts/{group}")["status"] == "firing"


# ---- The ack link ----------------------------------------------------------------------


def test_a_get_on_the_ack_link_shows_the_alert_and_acknowledges_nothing(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}", failures=2)

    with httpx.Client(base_url=stack.base_url) as anonymous:
        page = anonymous.get(_ack_path(group))

    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert 'method="post"' in page.text
    assert "billing" in page.text and "alerts-" in page.text
    assert "<dd>2</dd>" in page.text  # the count
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]
    assert _get(stack, f"/v1/alerts/{group}")["status"] == "firing"


def test_a_post_on_the_ack_link_acknowledges_and_a_second_says_so(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")

    with httpx.Client(base_url=stack.base_url) as anonymous:
        first = anonymous.post(_ack_path(group))
        second = anonymous.post(_ack_path(group))
        page_after = anonymous.get(_ack_path(group))

    assert first.status_code == 200
    assert "Acknowledged" in first.text
    shown = _get(stack, f"/v1/alerts/{group}")
    assert (shown["status"], shown["acknowledged_by"]) == ("acknowledged", "ack-link")
    assert second.status_code == 200
    assert "Already acknowledged" in second.text
    assert 'method="post"' not in page_after.text


def test_a_forged_or_malformed_ack_token_is_404(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")
    forged = links.sign(b"k" * 32, links.ACK, [group])
    unsubscribe = links.sign(links.secret_key(load_settings()), links.UNSUBSCRIBE, [group])

    with httpx.Client(base_url=stack.base_url) as anonymous:
        answers = [
            anonymous.post(f"{links.ACK_PATH}{token}")
            for token in (forged, unsubscribe, "garbage", _ack_path(group).split("/")[-1] + "x")
        ]
        shown = anonymous.get(f"{links.ACK_PATH}{forged}")

    assert [answer.status_code for answer in answers] == [404, 404, 404, 404]
    assert shown.status_code == 404
    assert _get(stack, f"/v1/alerts/{group}")["status"] == "firing"


# ---- Silences --------------------------------------------------------------------------


def _silence(**fields: Any) -> dict[str, Any]:
    ends_at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    return {"matchers": {"data.service": "billing"}, "ends_at": ends_at, **fields}


def test_a_silence_is_created_listed_and_ended_but_kept(stack: Stack) -> None:
    service = f"svc-{_run()}"
    # Any offset will do for a time in the future; it is answered in UTC.
    ends_at = (datetime.now(UTC) + timedelta(hours=2)).astimezone(timezone(timedelta(hours=2)))
    body = {
        "matchers": {"data.service": service},
        "ends_at": ends_at.isoformat(),
        "comment": "migration",
    }

    with stack.client() as http:
        created = http.post("/v1/silences", json=body)
        silence = created.json()
        active = _get(stack, "/v1/silences", active="true", limit=1000)["items"]
        ended = http.delete(f"/v1/silences/{silence['id']}")
        ended_again = http.delete(f"/v1/silences/{silence['id']}")
        unknown = http.delete("/v1/silences/sil_nope")

    assert created.status_code == 201, created.text
    assert silence["id"].startswith("sil_")
    assert silence["matchers"] == {"data.service": service}
    assert silence["created_by"] == "tests" and silence["comment"] == "migration"
    assert silence["ends_at"] == ends_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert silence["active"] is True
    assert silence["id"] in [s["id"] for s in active]
    assert ended.status_code == ended_again.status_code == 204
    assert unknown.status_code == 404
    everything = [s for page in _walk(stack, "/v1/silences", 1000) for s in page]
    still_active = _get(stack, "/v1/silences", active="true", limit=1000)["items"]
    assert silence["id"] in everything
    assert silence["id"] not in [s["id"] for s in still_active]


def test_silences_page_through_in_creation_order(stack: Stack) -> None:
    with stack.client() as http:
        made = [http.post("/v1/silences", json=_silence()).json()["id"] for _ in range(3)]

    listed = [sid for page in _walk(stack, "/v1/silences", 2) for sid in page]

    assert [sid for sid in listed if sid in made] == made


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"matchers": {"service": "billing"}}, "matchers", "invalid_matcher"),
        ({"matchers": {"data.x": {"bogus": 1}}}, "matchers", "invalid_matcher"),
        ({"matchers": {}}, "matchers", "too_short"),
        ({"ends_at": "2030-01-01T00:00:00"}, "ends_at", "timezone_aware"),
        ({"ends_at": "2001-01-01T00:00:00Z"}, "ends_at", "in_the_past"),
        ({"ends_at": "soon"}, "ends_at", "datetime_from_date_parsing"),
        ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2029-06-01T00:00:00Z"}, "ends_at", None),
    ],
)
def test_a_bad_silence_is_422_naming_the_field(
    stack: Stack, change: dict[str, Any], field: str, kind: str | None
) -> None:
    with stack.client() as http:
        response = http.post("/v1/silences", json=_silence(**change))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    if kind is not None:
        assert error["type"] == kind


# ---- hub alerts ------------------------------------------------------------------------


def test_hub_alerts_lists_shows_and_acknowledges(stack: Stack) -> None:
    subscription = f"alerts-{_run()}"
    group = _group(stack, subscription, failures=2)

    listed = run_hub(stack, "alerts", "list", "--status", "firing", "--subscription", subscription)
    shown = run_hub(stack, "alerts", "show", group)
    acked = run_hub(stack, "alerts", "ack", group)
    acked_again = run_hub(stack, "alerts", "ack", group)
    unknown = run_hub(stack, "alerts", "show", "alr_nope")

    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith(f"{group}  firing") and 'data.service="billing"' in line
    assert shown.returncode == 0, shown.stderr
    assert "count:" in shown.stdout and "events (2):" in shown.stdout
    assert acked.returncode == 0, acked.stderr
    assert _get(stack, f"/v1/alerts/{group}")["acknowledged_by"].startswith("cli")
    assert acked_again.returncode == 1 and "only a firing one" in acked_again.stderr
    assert unknown.returncode == 2 and "alr_nope" in unknown.stderr


def test_hub_alerts_resolve(stack: Stack) -> None:
    group = _group(stack, f"alerts-{_run()}")

    resolved = run_hub(stack, "alerts", "resolve", group)

    assert resolved.returncode == 0, resolved.stderr
    assert _get(stack, f"/v1/alerts/{group}")["status"] == "resolved"


def test_hub_alerts_silence_stores_a_silence_and_refuses_a_bad_matcher(stack: Stack) -> None:
    service = f"svc-{_run()}"

    made = run_hub(
        stack,
        "alerts",
        "silence",
        "--match",
        f"data.service={service}",
        "--for",
        "2h",
        "--comment",
        "deploy",
    )
    bad_path = run_hub(stack, "alerts", "silence", "--match", "service=x", "--for", "2h")
    no_equals = run_hub(stack, "alerts", "silence", "--match", "data.service", "--for", "2h")
    bad_duration = run_hub(stack, "alerts", "silence", "--match", "data.a=b", "--for", "soon")

    assert made.returncode == 0, made.stderr
    silence_id = made.stdout.strip()
    [silence] = [
        s
        for s in _get(stack, "/v1/silences", active="true", limit=1000)["items"]
        if s["id"] == silence_id
    ]
    assert silence["matchers"] == {"data.service": service}
    assert silence["comment"] == "deploy" and silence["created_by"].startswith("cli")
    ends_at = datetime.fromisoformat(silence["ends_at"])
    assert timedelta(hours=1, minutes=59) < ends_at - datetime.now(UTC) <= timedelta(hours=2)
    for refused in (bad_path, no_equals, bad_duration):
        assert refused.returncode == 2
    assert "--match" in bad_path.stderr and "no path into the event" in bad_path.stderr
    assert "PATH=VALUE" in no_equals.stderr
    assert "--for" in bad_duration.stderr


def test_hub_alerts_unsilence_ends_a_silence_it_still_lists(stack: Stack) -> None:
    made = run_hub(stack, "alerts", "silence", "--match", "data.service=x", "--for", "1h")
    silence_id = made.stdout.strip()

    ended = run_hub(stack, "alerts", "unsilence", silence_id)
    active = run_hub(stack, "alerts", "silences")
    everything = run_hub(stack, "alerts", "silences", "--all")
    unknown = run_hub(stack, "alerts", "unsilence", "sil_nope")

    assert ended.returncode == 0, ended.stderr
    assert silence_id not in active.stdout
    assert f"{silence_id}  inactive" in everything.stdout
    assert unknown.returncode == 2 and "sil_nope" in unknown.stderr
