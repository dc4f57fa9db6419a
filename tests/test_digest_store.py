"""Spec: a digest window is one per subscription, channel and recipient, whatever races.

Routings of a recipient's events running at once (on SQLite and on
PostgreSQL, where they truly overlap) fold every event into the same open
digest; an event routed as beat releases the window is folded into that
window or opens the next one, never lost; routing an event twice folds it once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from hub.routing import route_events
from hub.settings import Settings, load_settings
from hub.store import digests, schedule
from hub.store import events as stored_events
from hub.store.db import session
from hub.store.models import Event, Notification, NotificationStatus, utcnow
from hub.templates import Templates
from tests.test_publish_to_email import address, user

DIGEST = """
bundled = {subscriptions = false}

[[subscriptions]]
name = "weekly"
event = "user.registered"
channel = "email"
to = "{{ data.later }}"
template = "digest"
digest = "1h"
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "settings.toml").write_text(DIGEST)
    return load_settings(tmp_path / "settings.toml")


def _stored(url: str, to: str, count: int) -> list[str]:
    events = [
        Event(
            id=f"evt_{uuid.uuid4().hex}",
            type="user.registered",
            data={**user(address()), "later": to},
        )
        for _ in range(count)
    ]
    with session(url) as db:
        stored_events.add_events(db, events)
    return [event.id for event in events]


def _route(url: str, settings: Settings, event_id: str) -> None:
    with session(url) as db:
        route_events(db, settings, Templates(), [event_id])


def _all_at_once(work: list[Callable[[], None]]) -> None:
    start = threading.Barrier(len(work))
    failures: list[BaseException] = []

    def run(one: Callable[[], None]) -> None:
        start.wait()
        try:
            one()
        except BaseException as exc:  # noqa: BLE001  (reported below, in the test's thread)
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(one,)) for one in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures


def _notifications(url: str, to: str) -> list[Notification]:
    with session(url) as db:
        found = db.query(Notification).filter(Notification.recipient == to).all()
        db.expunge_all()
    return found


def test_concurrent_routings_of_one_recipients_events_share_one_digest(
    database_url: str,
    settings: Settings,
) -> None:
    to = address("weekly")
    event_ids = _stored(database_url, to, 8)

    _all_at_once(
        [
            lambda event_id=event_id: _route(database_url, settings, event_id)
            for event_id in event_ids
        ]
    )

    made = _notifications(database_url, to)
    [digest] = [n for n in made if n.is_digest]
    folded = [n for n in made if not n.is_digest]
    assert digest.status == NotificationStatus.SCHEDULED
    assert len(folded) == 8
    assert {(n.status, n.digest_id) for n in folded} == {(NotificationStatus.DIGESTED, digest.id)}


def test_routing_an_event_twice_folds_it_once(
    database_url: str,
    settings: Settings,
) -> None:
    to = address("weekly")
    [event_id] = _stored(database_url, to, 1)

    _route(database_url, settings, event_id)
    _route(database_url, settings, event_id)

    made = _notifications(database_url, to)
    assert len(made) == 2 and sum(n.is_digest for n in made) == 1


def test_an_event_routed_as_its_window_is_released_is_never_lost(
    database_url: str,
    settings: Settings,
) -> None:
    to = address("weekly")
    event_ids = _stored(database_url, to, 6)
    later = utcnow() + timedelta(hours=2)

    def release() -> None:
        for _ in range(20):
            with session(database_url) as db:
                schedule.release_due(db, later)

    _all_at_once([release, *(lambda e=e: _route(database_url, settings, e) for e in event_ids)])
    with session(database_url) as db:
        schedule.release_due(db, later)

    made = _notifications(database_url, to)
    windows = [n.id for n in made if n.is_digest]
    with session(database_url) as db:
        folded = digests.members(db, windows)
    assert sorted(e for members in folded.values() for e in members) == sorted(event_ids)
    assert {n.status for n in made if n.is_digest} == {NotificationStatus.QUEUED}
