"""Spec: notifications held for later: delays, ``deliver_at``, quiet hours, digests, cancellation.

A notification that must wait is ``scheduled``, with ``not_before`` and a
reason (``delayed``, ``deliver_at``, ``quiet_hours``), and is sent when its
time comes: a short wait through a broker countdown, any wait through beat's
release. Quiet hours are the recipient's, in their time zone, and hold
everything but ``critical``. A digest subscription folds a recipient's events
within its window into one notification (each folded one is ``digested`` and
names it), rendered with ``events`` and ``count`` when the window closes.
``POST /v1/cancel`` with an event's ``cancellation_key`` suppresses what it
has not sent yet, as ``cancelled``; an event cancelled before routing routes
to suppressed notifications only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.routing import route_events
from hub.scheduling import hold, quiet_hours_end
from hub.settings import load_settings
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store import schedule
from hub.store.db import migrate, session
from hub.store.models import Event
from hub.templates import Templates
from tests.conftest import (
    Stack,
    other_redis_db,
    run_hub,
    running_stack,
    start_hub_process,
    stop,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed

NOW = datetime(2026, 12, 3, 21, 30, tzinfo=UTC)
QUIET = {"quiet_hours": {"start": "22:00", "end": "07:00"}}


# ---- When a notification may go out (pure logic) ----------------------------------------


def test_nothing_holds_a_notification_without_delay_deliver_at_or_quiet_hours() -> None:
    assert hold(NOW) is None
    assert hold(NOW, deliver_at=NOW - timedelta(hours=1)) is None


def test_the_later_of_delay_and_deliver_at_wins() -> None:
    soon = hold(NOW, delay_s=600, deliver_at=NOW + timedelta(minutes=5))
    later = hold(NOW, delay_s=60, deliver_at=NOW + timedelta(hours=2))

    assert soon is not None and soon.until == NOW + timedelta(minutes=10)
    assert soon.reason.startswith("delayed:")
    assert later is not None and later.until == NOW + timedelta(hours=2)
    assert later.reason.startswith("deliver_at:")


def test_quiet_hours_span_midnight_in_the_recipients_zone() -> None:
    paris = ZoneInfo("Europe/Paris")  # UTC+1 in December
    at_23h = datetime(2026, 12, 3, 23, 0, tzinfo=paris)
    at_3h = datetime(2026, 12, 4, 3, 0, tzinfo=paris)
    at_noon = datetime(2026, 12, 4, 12, 0, tzinfo=paris)
    seven = datetime(2026, 12, 4, 7, 0, tzinfo=paris)

    assert quiet_hours_end(at_23h, "22:00", "07:00", "Europe/Paris") == seven
    assert quiet_hours_end(at_3h, "22:00", "07:00", "Europe/Paris") == seven
    assert quiet_hours_end(at_noon, "22:00", "07:00", "Europe/Paris") is None
    assert quiet_hours_end(at_noon, "11:00", "13:00:30", "Europe/Paris") == datetime(
        2026, 12, 4, 13, 0, 30, tzinfo=paris
    )


def test_quiet_hours_hold_everything_but_critical() -> None:
    normal = hold(NOW, preferences=QUIET, timezone="Europe/Paris")  # 22:30 in Paris
    critical = hold(NOW, priority="critical", preferences=QUIET, timezone="Europe/Paris")

    assert normal is not None and normal.reason.startswith("quiet_hours:")
    assert normal.until == datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    assert critical is None


def test_a_delay_that_ends_in_quiet_hours_moves_to_their_end() -> None:
    an_hour_before = NOW - timedelta(hours=1)  # 21:30 in Paris: before quiet hours
    held = hold(an_hour_before, delay_s=3600, preferences=QUIET, timezone="Europe/Paris")

    assert hold(an_hour_before, preferences=QUIET, timezone="Europe/Paris") is None
    assert held is not None and held.until == datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


def test_an_event_cancelled_before_routing_routes_to_suppressed_notifications(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings.toml").write_text("")  # the bundled catalog and subscriptions
    settings = load_settings(tmp_path / "settings.toml")
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    event = Event(
        id="evt_cancelled",
        type="user.registered",
        data=user(address()),
        cancellation_key="signup-42",
    )
    with session(url) as db:
        stored_events.add_event(db, event)
    with session(url) as db:
        cancelled = schedule.cancel(db, "signup-42", lambda event_type: True)
    assert cancelled.events == ["evt_cancelled"]

    with session(url) as db:
        routed = route_events(db, settings, Templates(), [event.id])
        made = stored_notifications.notifications_of(db, event.id)
        assert [(n.subscription, n.status) for n in made] == [("welcome-email", "suppressed")]
        assert made[0].last_error and made[0].last_error.startswith("cancelled:")

    assert routed.queued == []


# ---- Against the running hub -----------------------------------------------------------


def _run() -> str:
    return uuid.uuid4().hex[:8]


def _to_later(run: str, **extra: Any) -> dict[str, Any]:
    """A subscription of this run sending the welcome email to ``data.later``."""
    return {
        "name": f"held-{run}",
        "event": "user.registered",
        "channel": "email",
        "to": "{{ data.later }}",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
        **extra,
    }


def _named(run: str, **extra: Any) -> dict[str, Any]:
    """A subscription of this run without ``to``: it sends to the recipients an event names."""
    return {
        "name": f"named-{run}-{extra.get('priority', 'normal')}",
        "event": "user.registered",
        "channel": "email",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
        **extra,
    }


def _publish(stack: Stack, body: dict[str, Any]) -> str:
    with stack.client() as http:
        response = http.post("/v1/events", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _notification(stack: Stack, event_id: str, subscription: str) -> dict[str, Any]:
    """The event's notification by ``subscription``, once routing made it."""

    def made() -> dict[str, Any] | None:
        found = [
            n for n in stack.event(event_id)["notifications"] if n["subscription"] == subscription
        ]
        return found[0] if found else None

    return wait_until(made, 20, f"{subscription}'s notification of {event_id}")  # type: ignore[no-any-return]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _arrival(smtp: SmtpSink, to: str, timeout_s: float = 20) -> datetime:
    smtp.wait_for(lambda sink: bool(sink.to(to)), timeout_s)
    [received] = [r for r in smtp.messages if r.recipient == to]
    return datetime.fromtimestamp(received.arrived_at, UTC)


def test_a_subscription_delay_holds_its_notification_as_scheduled_then_sends_it(
    stack: Stack, smtp: SmtpSink
) -> None:
    run, later = _run(), address("later")
    with subscribed(stack, _to_later(run, delay="2s")):
        event_id = stack.publish("user.registered", {**user(address()), "run": run, "later": later})
        held = _notification(stack, event_id, f"held-{run}")

        assert held["status"] == "scheduled"
        assert held["last_error"].startswith("delayed:")
        arrived = _arrival(smtp, later)

    assert arrived >= _at(held["not_before"]) - timedelta(milliseconds=50)
    [sent] = [
        n
        for n in stack.settled(event_id)["notifications"]
        if n["subscription"] == held["subscription"]
    ]
    assert sent["status"] == "sent" and sent["attempts"] == 1


def test_deliver_at_with_any_offset_holds_the_events_notifications_until_then(
    stack: Stack, smtp: SmtpSink
) -> None:
    run, later = _run(), address("later")
    plus_one = timezone(timedelta(hours=1))
    deliver_at = (datetime.now(UTC) + timedelta(seconds=2)).astimezone(plus_one)
    with subscribed(stack, _to_later(run)):
        event_id = _publish(
            stack,
            {
                "type": "user.registered",
                "data": {**user(address()), "run": run, "later": later},
                "deliver_at": deliver_at.isoformat(),
            },
        )
        held = _notification(stack, event_id, f"held-{run}")

        assert held["status"] == "scheduled"
        assert held["last_error"].startswith("deliver_at:")
        assert abs(_at(held["not_before"]) - deliver_at) < timedelta(milliseconds=1)
        assert _arrival(smtp, later) >= deliver_at - timedelta(milliseconds=50)


def test_a_naive_deliver_at_is_refused_naming_the_field(stack: Stack) -> None:
    body = {"type": "user.registered", "data": user(address()), "deliver_at": "2030-01-01T09:00"}
    with stack.client() as http:
        response = http.post("/v1/events", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "deliver_at"]


def _recipient(stack: Stack, rid: str, **fields: Any) -> None:
    with stack.client() as http:
        response = http.put(f"/v1/recipients/{rid}", json=fields)
    assert response.status_code in (200, 201), response.text


def test_quiet_hours_hold_a_notification_as_scheduled_until_they_end_but_not_a_critical_one(
    stack: Stack, smtp: SmtpSink
) -> None:
    run, rid, email = _run(), f"quiet-{_run()}", address("quiet")
    zone = "Asia/Kolkata"  # UTC+05:30: the recipient's own clock, not the server's
    local = datetime.now(ZoneInfo(zone))
    end = local + timedelta(seconds=3)
    quiet = {
        "start": (local - timedelta(minutes=1)).strftime("%H:%M:%S"),
        "end": end.strftime("%H:%M:%S"),
    }
    _recipient(stack, rid, email=email, timezone=zone, preferences={"quiet_hours": quiet})
    with subscribed(stack, _named(run)), subscribed(stack, _named(run, priority="critical")):
        event_id = _publish(
            stack,
            {
                "type": "user.registered",
                "data": {**user(address()), "run": run},
                "recipients": [rid],
            },
        )
        held = _notification(stack, event_id, f"named-{run}-normal")

        assert held["status"] == "scheduled"
        assert held["last_error"].startswith("quiet_hours:")
        assert abs(_at(held["not_before"]) - end.replace(microsecond=0)) < timedelta(seconds=1)
        smtp.wait_for(lambda sink: len(sink.to(email)) == 2, 20)

    by_name = {n["subscription"]: n for n in stack.settled(event_id)["notifications"]}
    critical, normal = by_name[f"named-{run}-critical"], by_name[f"named-{run}-normal"]
    assert critical["status"] == normal["status"] == "sent"
    assert _at(critical["sent_at"]) < _at(held["not_before"]) <= _at(normal["sent_at"])


def test_a_digest_of_five_events_arrives_as_one_email_listing_all_five(
    stack: Stack, smtp: SmtpSink
) -> None:
    run, rid, email = _run(), f"digest-{_run()}", address("digest")
    _recipient(stack, rid, email=email)
    names = [f"Item {n} of {run}" for n in range(1, 6)]
    with subscribed(stack, _named(run, digest="3s", template="digest")):
        event_ids = [
            _publish(
                stack,
                {
                    "type": "user.registered",
                    "data": {**user(address()), "run": run, "name": name},
                    "recipients": [rid],
                },
            )
            for name in names
        ]
        smtp.wait_for(lambda sink: bool(sink.to(email)), 20)

    [message] = smtp.to(email)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message["Subject"] == "5 new updates"
    assert [line.removeprefix("- ") for line in body.splitlines() if line.startswith("- ")] == names
    made = [
        n
        for event_id in event_ids
        for n in stack.settled(event_id)["notifications"]
        if n["subscription"] == f"named-{run}-normal"
    ]
    folded = [n for n in made if n["digest_id"]]
    [digest] = [n for n in made if not n["digest_id"]]
    assert len(folded) == 5 and {n["status"] for n in folded} == {"digested"}
    assert {n["digest_id"] for n in folded} == {digest["id"]}
    assert digest["status"] == "sent"


def test_cancelling_a_key_suppresses_what_its_event_has_not_sent_yet(
    stack: Stack, smtp: SmtpSink
) -> None:
    run, kept, cancelled = _run(), address("kept"), address("cancelled")
    deliver_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    key = f"signup-{run}"
    with subscribed(stack, _to_later(run)):
        with stack.client() as http:
            response = http.post(
                "/v1/events:batch",
                json={
                    "events": [
                        {
                            "type": "user.registered",
                            "data": {**user(address()), "run": run, "later": later},
                            "deliver_at": deliver_at,
                            **({"cancellation_key": key} if later == cancelled else {}),
                        }
                        for later in (kept, cancelled)
                    ]
                },
            )
            assert response.status_code == 202, response.text
            kept_id, cancelled_id = (r["id"] for r in response.json()["results"])
            _notification(stack, cancelled_id, f"held-{run}")
            answer = http.post("/v1/cancel", json={"cancellation_key": key})

        assert answer.status_code == 200, answer.text
        # Its welcome email (the bundled subscription) and this run's one.
        assert answer.json() == {"cancellation_key": key, "events": [cancelled_id], "cancelled": 2}
        # Both were held in one routing, until one moment, and go out in one batch.
        _arrival(smtp, kept)

    assert smtp.to(cancelled) == []
    [stopped] = [
        n
        for n in stack.settled(cancelled_id)["notifications"]
        if n["subscription"] == f"held-{run}"
    ]
    assert stopped["status"] == "suppressed"
    assert stopped["last_error"].startswith("cancelled:")


def test_a_cancel_by_a_key_that_may_not_publish_the_type_cancels_nothing(stack: Stack) -> None:
    from hub import keys

    key = f"order-{_run()}"
    event_id = _publish(
        stack,
        {
            "type": "user.registered",
            "data": user(address()),
            "deliver_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
            "cancellation_key": key,
        },
    )
    orders = keys.create_key(stack.database_url, f"orders-{key}", scopes=["publish:order.*"])
    with stack.client(orders) as http:
        answer = http.post("/v1/cancel", json={"cancellation_key": key})

    assert answer.status_code == 200
    assert answer.json()["events"] == [] and answer.json()["cancelled"] == 0
    held = _notification(stack, event_id, "welcome-email")
    assert held["status"] == "scheduled"


# ---- Beat releases what is held in the store ----------------------------------------


@pytest.fixture(scope="module")
def store_only(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A hub that leaves every wait to beat (``countdown_max = 0``), with beat running."""
    home = tmp_path_factory.mktemp("store-only")
    env = {"HUB_SCHEDULING__COUNTDOWN_MAX": "0", "HUB_SCHEDULING__RELEASE_INTERVAL": "1s"}
    with running_stack(home, other_redis_db(broker_url), smtp, env) as running:
        beat = start_hub_process(["beat"], running.env, home / "beat.log")
        try:
            yield running
        finally:
            stop(beat)


def test_beat_releases_a_held_notification_when_its_time_comes(
    store_only: Stack, smtp: SmtpSink
) -> None:
    run, later = _run(), address("later")
    with subscribed(store_only, _to_later(run, delay="2s")):
        event_id = store_only.publish(
            "user.registered", {**user(address()), "run": run, "later": later}
        )
        held = _notification(store_only, event_id, f"held-{run}")
        assert held["status"] == "scheduled"

        arrived = _arrival(smtp, later, timeout_s=30)

    assert arrived >= _at(held["not_before"])
    assert len(smtp.to(later)) == 1


def test_the_cli_publishes_with_deliver_at_and_a_cancellation_key_and_cancels(
    stack: Stack,
) -> None:
    key = f"cli-{_run()}"
    deliver_at = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    published = run_hub(
        stack,
        "publish",
        "user.registered",
        "--data",
        json.dumps(user(address())),
        "--deliver-at",
        deliver_at,
        "--cancellation-key",
        key,
    )
    assert published.returncode == 0, published.stderr
    event_id = json.loads(published.stdout)["id"]
    assert _notification(stack, event_id, "welcome-email")["status"] == "scheduled"

    cancelled = run_hub(stack, "cancel", key)

    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == {"events": [event_id], "cancelled": 1}
    stopped = _notification(stack, event_id, "welcome-email")
    assert stopped["status"] == "suppressed" and stopped["last_error"].startswith("cancelled:")


def test_the_cli_refuses_a_deliver_at_without_an_offset_naming_the_field(stack: Stack) -> None:
    published = run_hub(
        stack,
        "publish",
        "user.registered",
        "--data",
        json.dumps(user(address())),
        "--deliver-at",
        "2030-01-01T09:00:00",
    )

    assert published.returncode == 2
    assert "deliver_at" in published.stderr
