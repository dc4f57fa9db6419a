"""Retention: only old, finished events, notifications and attempts go (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from hub.store.db import session
from hub.store.models import (
    AlertEvent,
    AlertGroup,
    Attempt,
    Event,
    EventStatus,
    Notification,
    NotificationStatus,
    OptOut,
    Recipient,
    StoredSubscription,
    Template,
    TemplateVersion,
    TopicMember,
    utcnow,
)
from hub.store.retention import purge

DAY = timedelta(days=1)
SENT, RETRYING = NotificationStatus.SENT, NotificationStatus.RETRYING


def add_event(
    url: str,
    event_id: str,
    age: timedelta,
    statuses: list[NotificationStatus],
    *,
    event_status: EventStatus = EventStatus.ROUTED,
    changed_ago: timedelta | None = None,
    attempts_each: int = 2,
    digest_id: str | None = None,
) -> list[str]:
    """An event ``age`` old with a notification in each status, each with its attempts."""
    at = utcnow() - age
    changed = utcnow() - (changed_ago if changed_ago is not None else age)
    ids = [f"{event_id}_n{i}" for i in range(len(statuses))]
    with session(url) as db:
        db.add(Event(id=event_id, type="t", data={}, status=event_status, created_at=at))
        db.flush()
        for nid, status in zip(ids, statuses, strict=True):
            db.add(
                Notification(
                    id=nid,
                    event_id=event_id,
                    subscription="s",
                    channel="email",
                    recipient="ada@example.com",
                    template="t",
                    status=status,
                    created_at=at,
                    updated_at=changed,
                    digest_id=digest_id,
                )
            )
            db.flush()
            for number in range(1, attempts_each + 1):
                db.add(Attempt(notification_id=nid, number=number, started_at=at, outcome="sent"))
    return ids


def remaining(url: str, model: type) -> int:
    with session(url) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def ids_of(url: str, model: type) -> set[str]:
    with session(url) as db:
        return set(db.scalars(select(model.id)))  # type: ignore[attr-defined]


def purge_now(
    url: str, events: timedelta = 30 * DAY, attempts: timedelta = 7 * DAY, batch: int = 1000
) -> dict[str, int]:
    return purge(
        url, events_before=utcnow() - events, attempts_before=utcnow() - attempts, batch=batch
    )


def test_an_old_finished_event_goes_with_its_notifications_and_attempts(database_url: str) -> None:
    # Given an event 40 days old whose two notifications were sent then
    add_event(database_url, "evt_old", 40 * DAY, [SENT, NotificationStatus.FAILED])

    # When retention keeps 30 days
    counts = purge_now(database_url)

    # Then all of it is gone
    assert counts == {"events": 1, "notifications": 2, "attempts": 4}
    assert remaining(database_url, Event) == 0
    assert remaining(database_url, Notification) == 0
    assert remaining(database_url, Attempt) == 0


def test_nothing_in_flight_or_recent_is_deleted(database_url: str) -> None:
    # Given old events with a notification still in flight, one that changed
    # yesterday (a delivery report), one not routed yet, and a recent one
    add_event(database_url, "evt_retrying", 40 * DAY, [SENT, RETRYING])
    for status in ("queued", "scheduled", "waiting", "sending"):
        add_event(database_url, f"evt_{status}", 40 * DAY, [NotificationStatus(status)])
    add_event(database_url, "evt_reported", 40 * DAY, [SENT], changed_ago=DAY)
    add_event(database_url, "evt_accepted", 40 * DAY, [], event_status=EventStatus.ACCEPTED)
    add_event(database_url, "evt_recent", 2 * DAY, [SENT])

    # When retention runs
    counts = purge_now(database_url, attempts=100 * DAY)

    # Then every one of them is kept whole
    assert counts == {"events": 0, "notifications": 0, "attempts": 0}
    assert len(ids_of(database_url, Event)) == 8
    assert remaining(database_url, Attempt) == 2 * 8


def test_a_member_of_a_digest_still_open_is_kept(database_url: str) -> None:
    # Given an old event folded into a digest that has not gone out yet
    [digest] = add_event(database_url, "evt_digest", DAY, [NotificationStatus.SCHEDULED])
    add_event(database_url, "evt_member", 40 * DAY, [NotificationStatus.DIGESTED], digest_id=digest)

    # When retention runs, then the member stays for the digest to render it
    purge_now(database_url)
    assert ids_of(database_url, Event) == {"evt_digest", "evt_member"}


def test_events_an_alert_group_names_are_kept(database_url: str) -> None:
    # Given old events that opened and joined an alert group
    add_event(database_url, "evt_first", 40 * DAY, [SENT])
    add_event(database_url, "evt_joined", 40 * DAY, [SENT])
    old = utcnow() - 40 * DAY
    with session(database_url) as db:
        db.add(
            AlertGroup(
                id="alg_1",
                subscription="s",
                group_key="k",
                labels={},
                first_event_id="evt_first",
                first_seen=old,
                last_seen=old,
            )
        )
        db.flush()
        db.add(AlertEvent(group_id="alg_1", event_id="evt_joined", at=old))

    # When retention runs
    purge_now(database_url)

    # Then the group's history is whole (its events' old attempts may go)
    assert ids_of(database_url, Event) == {"evt_first", "evt_joined"}
    assert ids_of(database_url, AlertGroup) == {"alg_1"}
    assert remaining(database_url, AlertEvent) == 1


def test_old_attempts_of_final_notifications_go_on_their_own(database_url: str) -> None:
    # Given events 10 days old: one finished, one still retrying
    add_event(database_url, "evt_done", 10 * DAY, [SENT])
    add_event(database_url, "evt_busy", 10 * DAY, [RETRYING])

    # When attempts are kept 7 days and events 30
    counts = purge_now(database_url)

    # Then only the finished notification's attempt log is gone
    assert counts == {"events": 0, "notifications": 0, "attempts": 2}
    with session(database_url) as db:
        left = set(db.scalars(select(Attempt.notification_id)))
    assert left == {"evt_busy_n0"}
    assert len(ids_of(database_url, Notification)) == 2


def test_retention_never_touches_people_or_configuration(database_url: str) -> None:
    # Given opt-outs, recipients, topics, subscriptions and templates, all old
    old = utcnow() - 400 * DAY
    with session(database_url) as db:
        db.add(OptOut(channel="sms", recipient="+15555550100", reason="STOP", created_at=old))
        db.add(Recipient(id="ada", email="ada@example.com", created_at=old, updated_at=old))
        db.flush()
        db.add(TopicMember(topic="oncall", recipient_id="ada", created_at=old))
        db.add(StoredSubscription(name="sub", definition={}, created_at=old, updated_at=old))
        db.add(Template(name="t", active_version=1, created_at=old, updated_at=old))
        db.add(TemplateVersion(name="t", version=1, content={}, source="api", created_at=old))
    add_event(database_url, "evt_old", 400 * DAY, [SENT])

    # When everything older than a day is purged
    counts = purge_now(database_url, events=DAY, attempts=DAY)

    # Then only the event went
    assert counts["events"] == 1
    for model in (OptOut, Recipient, TopicMember, StoredSubscription, Template, TemplateVersion):
        assert remaining(database_url, model) == 1, model.__name__


def test_a_purge_deletes_in_bounded_batches_until_done(database_url: str) -> None:
    # Given five old events of three notifications each
    for i in range(5):
        add_event(database_url, f"evt_{i}", 40 * DAY, [SENT, SENT, SENT], attempts_each=1)
    add_event(database_url, "evt_kept", 40 * DAY, [SENT, RETRYING], attempts_each=1)

    # When the purge deletes at most two notifications per transaction
    counts = purge_now(database_url, attempts=100 * DAY, batch=2)

    # Then it still deletes every finished one, and keeps the rest whole
    assert counts == {"events": 5, "notifications": 15, "attempts": 15}
    assert ids_of(database_url, Event) == {"evt_kept"}
    assert remaining(database_url, Notification) == 2
    assert remaining(database_url, Attempt) == 2


def test_hub_purge_before_deletes_by_hand_and_prints_counts(
    database_url: str, tmp_path: Path
) -> None:
    # Given an event 40 days old and one 2 days old
    add_event(database_url, "evt_old", 40 * DAY, [SENT])
    add_event(database_url, "evt_new", 2 * DAY, [SENT])

    # When `hub purge --before 30d` runs, then it deletes the old one and says so
    env = {"HUB_DATABASE_URL": database_url, "HUB_VAR_DIR": str(tmp_path / "var")}
    done = run_purge(env, "--before", "30d")
    assert done.stdout.strip() == "purged 1 events, 1 notifications, 2 attempts", done.stderr
    assert ids_of(database_url, Event) == {"evt_new"}

    # And an ISO 8601 time works the same; a wrong value names the option
    moment = (utcnow() - DAY).isoformat()
    assert "purged 1 events" in run_purge(env, "--before", moment).stdout
    wrong = run_purge(env, "--before", "soon")
    assert wrong.returncode == 2 and "--before" in wrong.stderr


def run_purge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "purge", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_beat_purges_every_retention_interval(tmp_path: Path) -> None:
    from hub.settings import load_settings
    from hub.worker import celery_config

    path = tmp_path / "settings.toml"
    path.write_text('broker_url = "redis://127.0.0.1:1/0"\n[retention]\ninterval = "10m"\n')
    config = celery_config(load_settings(path))
    assert config["beat_schedule"]["purge"]["task"] == "hub.purge"
    assert config["beat_schedule"]["purge"]["schedule"] == 600
    assert config["task_routes"]["hub.purge"] == {"queue": "events"}
