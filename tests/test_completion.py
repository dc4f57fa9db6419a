"""Spec: completion counters and ``event.completed`` (opt-in per event type).

An event of a type with ``completion = true`` is ``completed`` once every one
of its notifications is final: the event then keeps how many ended in which
way, and exactly one ``event.completed`` is published for it, never one for
an ``event.completed`` itself. Types without it are never completed.

The store and the middleware are tested on a migrated SQLite store with a
recording ``publish``; the whole flow on a real stack (API, worker, Redis,
the SMTP sink).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from hub.channels.base import Receipt
from hub.completion import (
    COMPLETED_EVENT,
    announce,
    complete,
    complete_routed,
    completion_data,
)
from hub.errors import PermanentError
from hub.events import Catalog
from hub.middleware import Batch, Completion, Turn
from hub.settings import Settings, bundled_path, load_settings
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.events import EventRow
from hub.store.models import Event, EventStatus, NotificationStatus
from hub.store.notifications import NewNotification, notification_id
from tests.conftest import (
    TEST_SETTINGS,
    Stack,
    other_redis_db,
    running_stack,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_middleware import RecordingPublish

COMPLETION_SETTINGS = """
[events."test.completion"]
description = "An event whose completion is announced."
completion = true

[events."test.plain"]
description = "The same kind of event, without completion."
"""

STACK_SUBSCRIPTIONS = """
[[subscriptions]]
name = "first"
event = "test.*"
channel = "email"
to = "{{ data.first }}"
template = "plain"

[[subscriptions]]
name = "second"
event = "test.*"
channel = "email"
to = "{{ data.second }}"
template = "plain"

[[subscriptions]]
name = "third"
event = "test.*"
channel = "email"
to = "{{ data.third }}"
template = "plain"

[[subscriptions]]
name = "completions"
event = "event.completed"
channel = "email"
to = "completions@example.com"
template = "plain"
"""


def settings_text(*extra: str) -> str:
    """The bundled settings with completion on for ``event.completed`` itself, and ``extra``.

    So the announcements are checked against the bundled schema, and must
    still never announce themselves.
    """
    bundled = bundled_path("settings.toml").read_text()
    entry = '[events."event.completed"]\n'
    assert bundled.count(entry) == 1
    return bundled.replace(entry, f"{entry}completion = true\n") + "".join(extra)


@pytest.fixture(scope="module")
def completion_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("settings") / "settings.toml"
    path.write_text(settings_text(COMPLETION_SETTINGS))
    return load_settings(path)


def routed_event(
    database_url: str, event_type: str, statuses: list[NotificationStatus]
) -> EventRow:
    """A routed event of ``event_type`` with one notification in each of ``statuses``."""
    event = Event(id=f"evt_{event_type}_{len(statuses)}", type=event_type, data={})
    planned = [
        NewNotification(
            id=notification_id(event.id, "s", "email", f"r{i}@example.com"),
            event_id=event.id,
            subscription="s",
            channel="email",
            recipient=f"r{i}@example.com",
            template="plain",
            status=status,
        )
        for i, status in enumerate(statuses)
    ]
    with session(database_url) as db:
        stored_events.add_event(db, event)
        stored_notifications.add_notifications(db, [event.id], planned)
    return EventRow(event.id, event.type, {})


def stored(database_url: str, event_id: str) -> Event:
    with session(database_url) as db:
        event = stored_events.get_event(db, event_id)
    assert event is not None
    return event


# ---- The store's check -------------------------------------------------------------------------

SUPPRESSED, QUEUED = NotificationStatus.SUPPRESSED, NotificationStatus.QUEUED


def test_an_event_whose_notifications_are_all_final_is_completed_with_its_counts(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [SUPPRESSED, SUPPRESSED])

    with session(database_url) as db:
        [completed] = complete(db, completion_settings, [event])

    row = stored(database_url, event.id)
    assert row.status == EventStatus.COMPLETED
    assert row.completed_at == completed.completed_at
    assert row.counts == completed.counts
    assert completed.counts == {
        "total": 2,
        "delivered": 0,
        "failed": 0,
        "suppressed": 2,
        "digested": 0,
        "pending": 0,
        "by_status": {"suppressed": 2},
    }


def test_an_event_that_made_no_notification_is_completed(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [])

    with session(database_url) as db:
        [completed] = complete(db, completion_settings, [event])

    assert completed.counts["total"] == 0
    assert stored(database_url, event.id).status == EventStatus.COMPLETED


def test_an_event_with_a_notification_still_open_is_not_completed(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [SUPPRESSED, QUEUED])

    with session(database_url) as db:
        completed = complete(db, completion_settings, [event])

    row = stored(database_url, event.id)
    assert completed == []
    assert (row.status, row.completed_at, row.counts) == (EventStatus.ROUTED, None, None)


def test_the_check_leaves_an_event_of_a_type_without_completion_alone(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.plain", [SUPPRESSED])

    with session(database_url) as db:
        completed = complete(db, completion_settings, [event])

    assert completed == []
    assert stored(database_url, event.id).status == EventStatus.ROUTED


def test_checking_twice_completes_once(database_url: str, completion_settings: Settings) -> None:
    event = routed_event(database_url, "test.completion", [SUPPRESSED])
    publish = RecordingPublish()

    for _ in range(2):
        with session(database_url) as db:
            completed = complete(db, completion_settings, [event, event])
        announce(publish, completed)

    assert [(t, d["event_id"]) for t, d, _ in publish.calls] == [(COMPLETED_EVENT, event.id)]


def test_live_counts_sum_the_open_notifications_as_pending(database_url: str) -> None:
    event = routed_event(database_url, "test.plain", [SUPPRESSED, QUEUED, QUEUED])

    with session(database_url) as db:
        counts = stored_events.event_counts(db, event.id)

    assert (counts["total"], counts["suppressed"], counts["pending"]) == (3, 1, 2)
    assert counts["by_status"] == {"suppressed": 1, "queued": 2}


def test_of_two_transactions_recording_an_events_last_two_notifications_one_completes_it(
    database_url: str,
) -> None:
    # Each transaction records one notification, then checks while the other
    # one's is uncommitted: the second to check must wait for the first to
    # commit, or neither would see both final. SQLite has one writer at a
    # time, so only PostgreSQL can interleave them.
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers: no two recordings interleave")
    event = routed_event(database_url, "test.completion", [QUEUED, QUEUED])
    with session(database_url) as db:
        first, second = (n.id for n in stored_notifications.notifications_of(db, event.id))
        stored_notifications.claim_many(db, [first, second])
    first_checked, second_waits = threading.Event(), threading.Event()
    results: dict[str, list[str]] = {}

    def record(name: str, notification: str, before: threading.Event | None) -> None:
        if before is not None:
            before.wait(10)
        with session(database_url) as db:
            stored_notifications.finish(db, notification, NotificationStatus.FAILED, "550")
            results[name] = [c.event_id for c in stored_events.complete_events(db, [event.id])]
            if before is None:
                first_checked.set()
                second_waits.wait(10)

    threads = [
        threading.Thread(target=record, args=("first", first, None)),
        threading.Thread(target=record, args=("second", second, first_checked)),
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiting_on_a_lock(database_url), what="the second check to wait")
    second_waits.set()
    for thread in threads:
        thread.join(10)

    assert results == {"first": [], "second": [event.id]}
    assert stored(database_url, event.id).status == EventStatus.COMPLETED


def waiting_on_a_lock(database_url: str) -> bool:
    """Whether a session of this database waits for a row lock."""
    with session(database_url) as db:
        waiting = db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def planned_for(database_url: str, event: EventRow) -> list[NewNotification]:
    """What routing planned for ``event``, as its stored notifications say."""
    with session(database_url) as db:
        stored = stored_notifications.notifications_of(db, event.id)
    return [
        NewNotification(
            n.id,
            n.event_id,
            n.subscription,
            n.channel,
            n.recipient,
            n.template,
            status=NotificationStatus(n.status),
        )
        for n in stored
    ]


def test_routing_completes_an_event_whose_notifications_were_all_suppressed_at_once(
    database_url: str, completion_settings: Settings
) -> None:
    suppressed = routed_event(database_url, "test.completion", [SUPPRESSED, SUPPRESSED])
    heard_by_nobody = routed_event(database_url, "test.completion", [])

    with session(database_url) as db:
        completed = complete_routed(
            db,
            completion_settings,
            [suppressed, heard_by_nobody],
            planned_for(database_url, suppressed),
        )

    assert sorted(c.event_id for c in completed) == sorted([suppressed.id, heard_by_nobody.id])


def test_routing_leaves_an_event_with_a_notification_to_send_to_delivery(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [SUPPRESSED, QUEUED])
    planned = planned_for(database_url, event)
    # Delivered meanwhile (a redelivered routing task): delivery completes it, not routing.
    with session(database_url) as db:
        open_one = next(n.id for n in planned if n.status is QUEUED)
        stored_notifications.claim_many(db, [open_one])
        stored_notifications.finish(db, open_one, NotificationStatus.FAILED, "550")

    with session(database_url) as db:
        completed = complete_routed(db, completion_settings, [event], planned)

    assert completed == []
    assert stored(database_url, event.id).status == EventStatus.ROUTED


# ---- Announcing --------------------------------------------------------------------------------


def test_event_completed_is_announced_once_per_event_and_matches_the_bundled_schema(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [SUPPRESSED])
    with session(database_url) as db:
        completed = complete(db, completion_settings, [event])
    publish = RecordingPublish()

    announce(publish, completed)

    [(event_type, data, options)] = publish.calls
    assert event_type == COMPLETED_EVENT
    assert data == completion_data(completed[0])
    assert data["event_id"] == event.id and data["type"] == "test.completion"
    assert data["completed_at"].endswith("Z")
    # A redelivered announcement is the same publish: the key makes it one event.
    assert options == {"idempotency_key": f"completed:{event.id}", "keep_if_broker_down": True}
    Catalog(load_settings(bundled_path("settings.toml")).events).validate(event_type, data)


def test_an_event_completed_event_is_completed_but_never_announced(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, COMPLETED_EVENT, [SUPPRESSED])
    publish = RecordingPublish()

    with session(database_url) as db:
        completed = complete(db, completion_settings, [event])
    announce(publish, completed)

    assert [c.event_id for c in completed] == [event.id]
    assert publish.calls == []


# ---- The middleware ----------------------------------------------------------------------------


def delivered_turns(database_url: str, event: EventRow, outcomes: list[bool]) -> list[Turn]:
    """Claim every notification of ``event``; each turn sent (True) or failed for good."""
    with session(database_url) as db:
        ids = [n.id for n in stored_notifications.notifications_of(db, event.id)]
        claimed = stored_notifications.claim_many(db, ids)
    turns = []
    for notification, sent in zip(claimed, outcomes, strict=True):
        turn = Turn(notification, event)
        if sent:
            turn.result = Receipt(provider_message_id=f"<{notification.id}>")
            turn.decide(NotificationStatus.SENT)
        else:
            turn.result = PermanentError("550 no such mailbox", channel="email")
            turn.decide(NotificationStatus.FAILED, "550 no such mailbox")
        turns.append(turn)
    return turns


def run_record(database_url: str, batch: Batch, middleware: Completion) -> None:
    """What :func:`hub.recording.record` and the core do around the hooks."""
    from hub.recording import record

    record(database_url, batch, [middleware])
    middleware.after_record(batch)


def test_the_middleware_completes_the_event_whose_last_notification_it_records(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.completion", [QUEUED, QUEUED, QUEUED])
    turns = delivered_turns(database_url, event, [True, True, False])
    publish = RecordingPublish()
    middleware = Completion(publish)

    run_record(database_url, Batch("email", completion_settings, turns[:2]), middleware)
    assert stored(database_url, event.id).status == EventStatus.ROUTED
    run_record(database_url, Batch("email", completion_settings, turns[2:]), middleware)

    row = stored(database_url, event.id)
    assert row.status == EventStatus.COMPLETED
    assert row.counts is not None
    assert (row.counts["delivered"], row.counts["failed"], row.counts["total"]) == (2, 1, 3)
    assert [(t, d["event_id"]) for t, d, _ in publish.calls] == [(COMPLETED_EVENT, event.id)]


def test_the_middleware_checks_a_batch_whose_sends_were_all_stored_as_they_came(
    database_url: str, completion_settings: Settings
) -> None:
    # The recorder stored every send while the batch ran: no recording
    # transaction runs, so the check runs after it, on its own.
    event = routed_event(database_url, "test.completion", [QUEUED])
    turns = delivered_turns(database_url, event, [True])
    with session(database_url) as db:
        stored_notifications.finish_sent(db, [(turns[0].notification.id, "<m>", None, None, None)])
    turns[0].recorded = True
    publish = RecordingPublish()
    settings = completion_settings.model_copy(update={"database_url": database_url})

    run_record(database_url, Batch("email", settings, turns), Completion(publish))

    assert stored(database_url, event.id).status == EventStatus.COMPLETED
    assert len(publish.calls) == 1


def test_the_middleware_leaves_events_of_types_without_completion_alone(
    database_url: str, completion_settings: Settings
) -> None:
    event = routed_event(database_url, "test.plain", [QUEUED])
    turns = delivered_turns(database_url, event, [True])
    publish = RecordingPublish()

    run_record(database_url, Batch("email", completion_settings, turns), Completion(publish))

    assert stored(database_url, event.id).status == EventStatus.ROUTED
    assert publish.calls == []


# ---- End to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def completion_stack(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A stack whose catalog turns completion on for test.completion and event.completed."""
    home = tmp_path_factory.mktemp("completion")
    settings = home / "completion-settings.toml"
    settings.write_text(settings_text(TEST_SETTINGS, COMPLETION_SETTINGS, STACK_SUBSCRIPTIONS))
    plain = home / "templates" / "plain"
    plain.mkdir(parents=True)
    (plain / "subject.txt").write_text("{{ event.type }}")
    (plain / "body.txt").write_text("event {{ event.id }}")
    env = {"HUB_SETTINGS": str(settings)}
    with running_stack(home, other_redis_db(broker_url), smtp, extra_env=env) as stack:
        yield stack


def three(tag: str) -> dict[str, str]:
    """Data for three emails: two the sink accepts, one it rejects (550)."""
    return {
        "first": f"{tag}-1@example.com",
        "second": f"{tag}-2@example.com",
        "third": f"reject-{tag}@example.com",
    }


def announcements(stack: Stack, event_id: str) -> list[Event]:
    """The ``event.completed`` events stored for ``event_id``."""
    with session(stack.database_url) as db:
        found = db.scalars(select(Event).where(Event.type == COMPLETED_EVENT)).all()
    return [e for e in found if e.data.get("event_id") == event_id]


def completed(stack: Stack, event_id: str) -> dict[str, Any]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (event := stack.event(event_id))["status"] == "completed" and event,
        what=f"event {event_id} to complete",
    )


def test_an_event_of_a_type_with_completion_ends_completed_with_its_counts(
    completion_stack: Stack,
) -> None:
    event_id = completion_stack.publish("test.completion", three("done"))

    event = completed(completion_stack, event_id)

    assert sorted(n["status"] for n in event["notifications"]) == ["failed", "sent", "sent"]
    assert event["counts"] == {
        "total": 3,
        "delivered": 2,
        "failed": 1,
        "suppressed": 0,
        "digested": 0,
        "pending": 0,
        "by_status": {"sent": 2, "failed": 1},
    }
    assert event["completed_at"] is not None and event["completed_at"].endswith("Z")
    [announcement] = wait_until(lambda: announcements(completion_stack, event_id))
    assert announcement.data["counts"] == event["counts"]
    assert announcement.data["type"] == "test.completion"


def test_an_event_of_a_type_without_completion_is_never_completed(
    completion_stack: Stack,
) -> None:
    plain_id = completion_stack.publish("test.plain", three("plain"))
    plain = completion_stack.settled(plain_id)
    # A later event of a completion type, completed and announced, shows the
    # worker has long recorded the plain event's outcomes.
    later_id = completion_stack.publish("test.completion", three("after-plain"))
    completed(completion_stack, later_id)
    wait_until(lambda: announcements(completion_stack, later_id))

    plain = completion_stack.event(plain_id)
    assert plain["status"] == "routed"
    assert plain["completed_at"] is None
    # Its counts are live, from its notifications.
    assert (plain["counts"]["delivered"], plain["counts"]["failed"]) == (2, 1)
    assert announcements(completion_stack, plain_id) == []


def test_an_event_completed_event_never_announces_itself(completion_stack: Stack) -> None:
    event_id = completion_stack.publish("test.completion", three("source"))
    [announcement] = wait_until(lambda: announcements(completion_stack, event_id))

    # The announcement is itself delivered (one email) and, completion being on
    # for its type, completed...
    own = completed(completion_stack, announcement.id)
    assert own["counts"]["delivered"] == 1
    # ... and a later event's announcement shows the worker is past it.
    later_id = completion_stack.publish("test.completion", three("after-source"))
    [later] = wait_until(lambda: announcements(completion_stack, later_id))
    completed(completion_stack, later.id)

    assert announcements(completion_stack, announcement.id) == []
    assert len(announcements(completion_stack, event_id)) == 1
