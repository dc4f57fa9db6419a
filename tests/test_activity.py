"""Spec: what the hub did, listed and counted over HTTP.

- ``GET /v1/notifications`` filters on ``event_type``, ``channel``, ``status``
  (repeatable), ``recipient`` (address or recipient id), ``since`` and
  ``until`` (creation time, ISO 8601; ``since`` also takes ``1h``); it answers
  ``{"items", "next_cursor"}`` in ``(created_at, id)`` order (``order=desc``
  reverses it), each item with its ``attempt_log``.
- ``GET /v1/events`` filters on ``type``, ``status``, ``recipient``, ``since``
  and ``until``, in the same shape, each event with its ``counts``.
- ``GET /v1/stats?window=1h`` counts notifications per channel and status in
  the window, with failure rates, a series per channel, queue depths and the
  oldest queued age.
- A bad filter is a 422 naming it; ``read`` keys may read all of it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from kombu import Connection, Queue

from hub import keys
from hub.embedded import _free_port
from hub.queue_depths import DepthUnavailable, queue_depths
from hub.store import activity
from hub.store.db import session
from hub.store.models import Event, Notification
from tests.conftest import Stack, missing_service
from tests.test_publish_to_email import address, user


@dataclass
class Run:
    """Three user.registered events, settled: two sent emails and one rejected."""

    start: str
    end: str
    sent: list[dict[str, Any]]  # the events
    failed: dict[str, Any]
    to: list[str]


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def run(stack: Stack) -> Run:
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    to = [address("activity"), address("activity"), address("reject")]
    events = [stack.settled(stack.publish("user.registered", user(a))) for a in to]
    end = datetime.now(UTC) + timedelta(milliseconds=1)
    return Run(_iso(start), _iso(end), events[:2], events[2], to)


def _get(stack: Stack, path: str, **params: Any) -> Any:
    with stack.client() as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def _mine(run: Run) -> list[str]:
    return [n["id"] for e in [*run.sent, run.failed] for n in e["notifications"]]


# ---- GET /v1/notifications ----------------------------------------------------------------


def test_notifications_are_listed_with_their_attempt_log(stack: Stack, run: Run) -> None:
    page = _get(stack, "/v1/notifications", recipient=run.to[0])

    [item] = page["items"]
    assert page["next_cursor"] is None
    assert (item["channel"], item["status"], item["recipient"]) == ("email", "sent", run.to[0])
    assert item["event_id"] == run.sent[0]["id"]
    assert item["event_type"] == "user.registered"
    [attempt] = item["attempt_log"]
    assert (attempt["number"], attempt["outcome"], attempt["error"]) == (1, "sent", None)
    assert attempt["duration_s"] >= 0


def test_a_failure_is_found_by_status_and_channel_with_its_error(stack: Stack, run: Run) -> None:
    page = _get(stack, "/v1/notifications", status="failed", channel="email", since=run.start)

    [failed] = [n for n in page["items"] if n["event_id"] == run.failed["id"]]
    assert all(n["status"] == "failed" and n["channel"] == "email" for n in page["items"])
    assert failed["last_error"]
    assert failed["attempt_log"][-1]["error"]
    sent = _get(stack, "/v1/notifications", status="sent", since=run.start)
    assert failed["id"] not in _ids(sent)


def test_several_statuses_match_any_of_them(stack: Stack, run: Run) -> None:
    with stack.client() as http:
        response = http.get(
            "/v1/notifications",
            params=[("status", "sent"), ("status", "failed"), ("event_type", "user.registered")]
            + [("since", run.start), ("until", run.end)],
        )

    assert sorted(_ids(response.json())) == sorted(_mine(run))


def test_event_type_since_and_until_bound_the_list(stack: Stack, run: Run) -> None:
    within = _get(
        stack, "/v1/notifications", event_type="user.registered", since=run.start, until=run.end
    )
    before = _get(stack, "/v1/notifications", event_type="user.registered", until=run.start)
    other = _get(stack, "/v1/notifications", event_type="task.failed", since=run.start)

    assert sorted(_ids(within)) == sorted(_mine(run))
    assert not set(_ids(before)) & set(_mine(run))
    assert not set(_ids(other)) & set(_mine(run))


def test_pages_of_one_walk_the_list_in_created_order(stack: Stack, run: Run) -> None:
    filters = {"event_type": "user.registered", "since": run.start, "until": run.end}
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        page = _get(stack, "/v1/notifications", limit=1, **filters, **_cursor(cursor))
        assert len(page["items"]) <= 1
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [n["id"] for n in seen] == _ids(_get(stack, "/v1/notifications", **filters))
    assert sorted(n["id"] for n in seen) == sorted(_mine(run))
    keys_in_order = [(n["created_at"], n["id"]) for n in seen]
    assert keys_in_order == sorted(keys_in_order)
    newest_first = _get(stack, "/v1/notifications", order="desc", **filters)
    assert _ids(newest_first) == [n["id"] for n in reversed(seen)]


def _cursor(cursor: str | None) -> dict[str, str]:
    return {} if cursor is None else {"cursor": cursor}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "1h"}, "until"),
        ({"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"}, "until"),
        ({"status": "lost"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_a_bad_notification_filter_is_422_naming_it(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    with stack.client() as http:
        response = http.get("/v1/notifications", params=params)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["query", field]


# ---- GET /v1/events -----------------------------------------------------------------------


def test_events_are_listed_by_type_and_time_with_counts(stack: Stack, run: Run) -> None:
    page = _get(stack, "/v1/events", type="user.registered", since=run.start, until=run.end)

    assert _ids(page) == [e["id"] for e in [*run.sent, run.failed]]
    first = page["items"][0]
    assert first["type"] == "user.registered"
    assert first["status"] in ("routed", "completed")
    assert first["counts"]["delivered"] == 1
    assert page["items"][2]["counts"]["failed"] == 1


def test_events_are_found_by_recipient_and_status(stack: Stack, run: Run) -> None:
    by_recipient = _get(stack, "/v1/events", recipient=run.to[2])
    routed = _get(stack, "/v1/events", status=run.failed["status"], since=run.start)
    quarantined = _get(stack, "/v1/events", status="quarantined", since=run.start)

    assert _ids(by_recipient) == [run.failed["id"]]
    assert run.failed["id"] in _ids(routed)
    assert quarantined["items"] == []


def test_event_pages_of_one_carry_a_cursor(stack: Stack, run: Run) -> None:
    filters = {"type": "user.registered", "since": run.start, "until": run.end}
    first = _get(stack, "/v1/events", limit=1, **filters)
    second = _get(stack, "/v1/events", limit=1, cursor=first["next_cursor"], **filters)
    third = _get(stack, "/v1/events", limit=2, cursor=second["next_cursor"], **filters)

    assert _ids(first) + _ids(second) + _ids(third) == [e["id"] for e in [*run.sent, run.failed]]
    assert third["next_cursor"] is None


def test_a_bad_event_filter_is_422_naming_it(stack: Stack) -> None:
    with stack.client() as http:
        since = http.get("/v1/events", params={"since": "soon"})
        status = http.get("/v1/events", params={"status": "sent"})

    assert since.status_code == status.status_code == 422
    assert since.json()["detail"][0]["loc"] == ["query", "since"]
    assert status.json()["detail"][0]["loc"][:2] == ["query", "status"]


def test_one_event_is_still_read_with_its_notifications(stack: Stack, run: Run) -> None:
    event = _get(stack, f"/v1/events/{run.sent[0]['id']}")

    [notification] = event["notifications"]
    assert notification["attempt_log"][0]["duration_s"] >= 0


# ---- GET /v1/stats ------------------------------------------------------------------------


def test_stats_count_the_window_per_channel_and_status(stack: Stack, run: Run) -> None:
    stats = _get(stack, "/v1/stats", window="1h")

    email = stats["by_channel"]["email"]
    assert email["by_status"]["sent"] >= 2
    assert email["by_status"]["failed"] >= 1
    assert stats["by_status"]["sent"] >= 2
    assert stats["total"] == sum(stats["by_status"].values())
    assert 0 < stats["failure_rates"]["email"] < 1
    assert email["failure_rate"] == stats["failure_rates"]["email"]
    assert len(email["series"]) == 24
    assert sum(sent for sent, _ in email["series"]) == sum(
        email["by_status"].get(s, 0) for s in ("sent", "delivered")
    )
    assert sum(failed for _, failed in email["series"]) == email["by_status"]["failed"]
    assert (stats["window"], stats["window_s"]) == ("1h", 3600)


def test_stats_give_queue_depths_and_the_oldest_queued_age(stack: Stack, run: Run) -> None:
    stats = _get(stack, "/v1/stats", window="15m")

    assert stats["queues_error"] is None
    for queue in ("celery", "events", "email", "email.critical", "email.low"):
        assert isinstance(stats["queues"][queue], int), queue
    age = stats["oldest_queued_age_s"]
    assert age is None or age >= 0


def test_a_window_with_nothing_in_it_counts_nothing(stack: Stack, run: Run) -> None:
    stats = _get(stack, "/v1/stats", window="1ms")

    assert stats["total"] == sum(c["total"] for c in stats["by_channel"].values())


@pytest.mark.parametrize("window", ["an hour", "0s", "-1h", "100d", "1y"])
def test_a_bad_window_is_422_naming_it(stack: Stack, window: str) -> None:
    with stack.client() as http:
        response = http.get("/v1/stats", params={"window": window})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "window"]


def test_redis_queue_depths_count_every_priority_step(broker_url: str) -> None:
    url = urlsplit(broker_url)._replace(path="/14").geturl()  # a database no stack uses
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.rpush("email", "a", "b")
    client.rpush("email\x06\x163", "c")  # kombu's key for a message of priority 3

    assert queue_depths(url, ["email", "sms"]) == {"email": 3, "sms": 0}
    client.flushdb()


def test_rabbitmq_queue_depths_are_message_counts() -> None:
    url = os.environ.get("HUB_TEST_RABBITMQ_URL")
    if not url:
        missing_service("RabbitMQ queue depths need HUB_TEST_RABBITMQ_URL")
    name = f"hub-depth-{uuid.uuid4().hex[:8]}"
    with Connection(url) as connection:
        queue = Queue(name, auto_delete=False)
        producer = connection.Producer()
        for body in ("a", "b"):
            producer.publish(body, routing_key=name, declare=[queue])
        try:
            depths = queue_depths(url, [name, f"{name}-never-declared"])
        finally:
            queue.bind(connection.default_channel).delete()

    assert depths == {name: 2, f"{name}-never-declared": 0}


def test_an_unreachable_broker_is_one_error_to_report() -> None:
    with pytest.raises(DepthUnavailable):
        queue_depths(f"redis://127.0.0.1:{_free_port()}/0", ["email"])


# ---- The store, on SQLite and PostgreSQL ----------------------------------------------------


def test_store_pages_and_window_counts_agree_on_every_backend(database_url: str) -> None:
    now = datetime.now(UTC)
    # Minutes ago, none on a 5-minute slice's edge (where rounding could pick either side).
    rows = [  # channel, status, minutes ago
        ("email", "sent", 52),
        ("email", "failed", 41),
        ("email", "sent", 4),
        ("sms", "delivered", 1),
        ("sms", "queued", 2),
        ("email", "sent", 90),  # outside a 1h window
    ]
    with session(database_url) as db:
        db.add(Event(id="evt_a", type="user.registered", data={}, created_at=now))
        for i, (channel, status, minutes) in enumerate(rows):
            at = now - timedelta(minutes=minutes)
            db.add(
                Notification(
                    id=f"ntf_{i}", event_id="evt_a", subscription="s", channel=channel,
                    recipient=f"r{i}", template="t", status=status, created_at=at, updated_at=at,
                )
            )  # fmt: skip

    with session(database_url) as db:
        counts = activity.window_counts(db, now - timedelta(hours=1), now, 12)
        oldest = activity.oldest_queued(db)
        first = activity.notification_page(db, activity.NotificationFilter(), None, 2)
        rest = activity.notification_page(
            db, activity.NotificationFilter(), (first[-1][0].created_at, first[-1][0].id), 10
        )
        newest = activity.notification_page(db, activity.NotificationFilter(), None, 1, True)

    assert counts.by_channel == {
        "email": {"sent": 2, "failed": 1},
        "sms": {"delivered": 1, "queued": 1},
    }
    assert counts.series["email"][1] == [1, 0]  # 52 minutes ago: the window's second 5 minutes
    assert counts.series["email"][3] == [0, 1]
    assert counts.series["email"][11] == [1, 0]
    assert counts.series["sms"][11] == [1, 0]
    assert oldest is not None and abs((now - oldest).total_seconds() - 120) < 1
    order = [n.id for n, _ in first + rest]
    assert order == ["ntf_5", "ntf_0", "ntf_1", "ntf_2", "ntf_4", "ntf_3"]
    assert [n.id for n, _ in newest] == ["ntf_3"]


# ---- Scopes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(stack: Stack) -> Iterator[str]:
    yield keys.create_key(stack.database_url, f"reader-{uuid.uuid4().hex[:8]}", scopes=["read"])


@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/events", "/v1/stats"])
def test_read_keys_read_activity_and_publishers_do_not(
    stack: Stack, reader: str, path: str
) -> None:
    publisher = keys.create_key(
        stack.database_url, f"pub-{uuid.uuid4().hex[:8]}", scopes=["publish:*"]
    )
    with stack.client(reader) as http:
        assert http.get(path).status_code == 200
    with stack.client(publisher) as http:
        assert http.get(path).status_code == 403
    assert httpx.get(stack.base_url + path).status_code == 401
