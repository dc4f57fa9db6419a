"""Spec: the store's contract, on SQLite and on PostgreSQL (HUB_TEST_DATABASE_URL)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy import inspect, text

from hub.store import backlog
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import engine, migrate, seconds_ago, session
from hub.store.models import Event, NotificationStatus
from hub.store.notifications import NewNotification, notification_id


def new_event(key: str | None = None) -> Event:
    return Event(
        id=f"evt_{uuid.uuid4().hex}", type="user.registered", data={"n": 1}, idempotency_key=key
    )


def routed(event: Event, *recipients: str) -> list[NewNotification]:
    return [
        NewNotification(
            id=notification_id(event.id, "welcome", "email", r),
            event_id=event.id,
            subscription="welcome",
            channel="email",
            recipient=r,
            template="user.registered",
        )
        for r in recipients
    ]


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    migrate(database_url)

    tables = set(inspect(engine(database_url)).get_table_names())
    assert {"events", "notifications", "attempts", "api_keys", "alembic_version"} <= tables


def test_an_idempotency_key_maps_to_the_first_event(database_url: str) -> None:
    key = f"k-{uuid.uuid4()}"
    with session(database_url) as db:
        first, created = stored_events.add_event(db, new_event(key))
    with session(database_url) as db:
        again, created_again = stored_events.add_event(db, new_event(key))

    assert created and not created_again
    assert again.id == first.id


def test_routing_twice_creates_each_notification_once(database_url: str) -> None:
    with session(database_url) as db:
        event, _ = stored_events.add_event(db, new_event())
    plan = routed(event, "a@example.com", "b@example.com")

    with session(database_url) as db:
        first = stored_notifications.add_notifications(db, [event.id], plan)
    with session(database_url) as db:
        second = stored_notifications.add_notifications(db, [event.id], plan)
        stored = stored_notifications.notifications_of(db, event.id)
        status = stored_events.get_event(db, event.id).status  # type: ignore[union-attr]

    assert sorted(first) == sorted(second) == sorted((n.id, "email") for n in plan)
    assert len(stored) == 2
    assert status == "routed"


def test_a_notification_can_be_claimed_once_until_it_is_released_for_retry(
    database_url: str,
) -> None:
    with session(database_url) as db:
        event, _ = stored_events.add_event(db, new_event())
        [(nid, _channel)] = stored_notifications.add_notifications(
            db, [event.id], routed(event, "a@example.com")
        )

    with session(database_url) as db:
        [claimed] = stored_notifications.claim_many(db, [nid])
    with session(database_url) as db:
        assert stored_notifications.claim_many(db, [nid]) == []
        stored_notifications.finish(db, nid, NotificationStatus.RETRYING, error="451")
    with session(database_url) as db:
        [reclaimed] = stored_notifications.claim_many(db, [nid])
    with session(database_url) as db:
        stored_notifications.finish_sent(db, [(nid, "<m@x>", None, None, None)])
    with session(database_url) as db:
        assert stored_notifications.claim_many(db, [nid]) == []
        [notification] = stored_notifications.notifications_of(db, event.id)
        attempts = stored_notifications.attempts_of(db, [nid])

    assert claimed.attempts == 1
    assert reclaimed.attempts == 2
    assert notification.status == "sent" and notification.provider_message_id == "<m@x>"
    assert [(a.number, a.outcome, a.error) for a in attempts] == [
        (1, "transient", "451"),
        (2, "sent", None),
    ]


def test_the_sweeper_finds_unrouted_events_and_stalled_notifications(database_url: str) -> None:
    with session(database_url) as db:
        unrouted, _ = stored_events.add_event(db, new_event())
        event, _ = stored_events.add_event(db, new_event())
        [(queued, _), (sending, _)] = stored_notifications.add_notifications(
            db, [event.id], routed(event, "a@example.com", "b@example.com")
        )
    with session(database_url) as db:
        stored_notifications.claim_many(db, [sending])
    future = seconds_ago(-60)

    with session(database_url) as db:
        events = [event_id for page in stored_events.stuck_events(db, future) for event_id in page]
        stalled = dict(backlog.stuck_notifications(db, future, future, future))
    with session(database_url) as db:
        statuses = {n.id: n.status for n in stored_notifications.notifications_of(db, event.id)}
        released = stored_notifications.claim_many(db, [sending])

    assert unrouted.id in events and event.id not in events
    assert stalled == {queued: "email", sending: "email"}
    assert statuses == {queued: "queued", sending: "retrying"}
    assert [claim.attempts for claim in released] == [2]


def test_a_late_worker_cannot_overwrite_a_notification_it_no_longer_owns(
    database_url: str,
) -> None:
    with session(database_url) as db:
        event, _ = stored_events.add_event(db, new_event())
        [(nid, _)] = stored_notifications.add_notifications(
            db, [event.id], routed(event, "a@example.com")
        )
    with session(database_url) as db:
        stored_notifications.claim_many(db, [nid])
    with session(database_url) as db:  # the sweeper decides the attempt was lost
        backlog.stuck_notifications(db, seconds_ago(-60), seconds_ago(-60), seconds_ago(-60))

    with session(database_url) as db:
        recorded = stored_notifications.finish_sent(db, [(nid, "<m@x>", None, None, None)])
        [notification] = stored_notifications.notifications_of(db, event.id)

    assert recorded == 0
    assert notification.status == "retrying"


def test_a_sent_notification_keeps_what_its_channel_reported(database_url: str) -> None:
    sms = {"to": "+15005550006", "encoding": "GSM-7"}
    with session(database_url) as db:
        event, _ = stored_events.add_event(db, new_event())
        [(a, _), (b, _)] = stored_notifications.add_notifications(
            db, [event.id], routed(event, "a@example.com", "b@example.com")
        )
    with session(database_url) as db:
        stored_notifications.claim_many(db, [a, b])
    with session(database_url) as db:
        recorded = stored_notifications.finish_sent(
            db, [(a, "SM1", 2, sms, "backup"), (b, "<m@x>", None, None, None)]
        )
    with session(database_url) as db:
        stored = {n.id: n for n in stored_notifications.notifications_of(db, event.id)}

    assert recorded == 2
    assert (stored[a].provider_message_id, stored[a].segments, stored[a].details) == ("SM1", 2, sms)
    assert (stored[a].provider, stored[b].provider) == ("backup", None)
    assert (stored[b].provider_message_id, stored[b].segments, stored[b].details) == (
        "<m@x>",
        None,
        None,
    )


def test_api_keys_are_found_by_hash_only(database_url: str) -> None:
    from hub import keys

    key = keys.create_key(database_url, f"svc-{uuid.uuid4().hex[:6]}")

    assert keys.is_valid(database_url, key)
    assert not keys.is_valid(database_url, key + "x")
    with session(database_url) as db:
        stored = db.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
    assert key not in stored and keys.hash_key(key) in stored


def test_the_sweeper_sees_every_page_of_stuck_events_oldest_first(database_url: str) -> None:
    with session(database_url) as db:
        stored = [stored_events.add_event(db, new_event())[0].id for _ in range(5)]

    with session(database_url) as db:
        pages = list(stored_events.stuck_events(db, seconds_ago(-60), page_size=2))

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [event_id for page in pages for event_id in page] == stored


def test_an_event_failing_routing_is_quarantined_at_the_limit_and_no_longer_swept(
    database_url: str,
) -> None:
    with session(database_url) as db:
        bad, good = (stored_events.add_event(db, new_event())[0].id for _ in range(2))

    verdicts = []
    for _ in range(3):
        with session(database_url) as db:
            verdicts.append(stored_events.record_routing_failure(db, bad, "RecursionError", 3))
    with session(database_url) as db:
        pages = stored_events.stuck_events(db, seconds_ago(-60))
        swept = [event_id for page in pages for event_id in page]
        event = stored_events.get_event(db, bad)
        assert event is not None
        kept = (event.status, event.routing_attempts, event.error)

    assert verdicts == [False, False, True]
    assert kept == ("quarantined", 3, "RecursionError")
    assert swept == [good]


def test_a_ttl_sets_when_a_routed_notification_expires(database_url: str) -> None:
    with session(database_url) as db:
        event, _ = stored_events.add_event(db, new_event())
        [planned] = routed(event, "a@example.com")
        expiring = replace(planned, ttl_s=600.0)
        [(nid, _)] = stored_notifications.add_notifications(db, [event.id], [expiring])
    with session(database_url) as db:
        [claimed] = stored_notifications.claim_many(db, [nid])

    assert claimed.expires_at is not None
    remaining_s = (claimed.expires_at - claimed.created_at).total_seconds()
    assert 599 <= remaining_s <= 601
