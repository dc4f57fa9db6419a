"""Spec: an event may name its recipients and topics.

``"recipients": ["user-1", {"id": "user-2", "email": "b@example.com"}]`` names
stored recipients by id, or inline recipients that are stored as given (a
merge, like ``PUT /v1/recipients/{id}``); ``"topics": ["oncall"]`` names every
member of a topic. Both are part of what an idempotency key stands for, and a
bad entry gets 422 naming it.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from tests.conftest import Stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed


def _publish(stack: Stack, **body: Any) -> Any:
    with stack.client() as http:
        return http.post("/v1/events", json={"type": "user.registered", **body})


def test_an_inline_recipient_is_stored_with_the_event(stack: Stack) -> None:
    rid, email = f"user-{uuid.uuid4().hex[:8]}", address("inline")

    response = _publish(
        stack, data=user(email), recipients=[{"id": rid, "email": email, "locale": "fr"}]
    )

    assert response.status_code == 202, response.text
    with stack.client() as http:
        stored = http.get(f"/v1/recipients/{rid}").json()
    assert (stored["email"], stored["locale"]) == (email, "fr")


def test_a_bad_recipient_or_topic_is_refused_naming_it(stack: Stack) -> None:
    response = _publish(
        stack,
        data=user(address("bad-named")),
        recipients=["ok-id", {"id": "x", "email": "not an email"}],
        topics=["on/call"],
    )

    assert response.status_code == 422
    locs = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert ("body", "recipients", 1, "email") in locs
    assert ("body", "topics", 0) in locs


def test_the_same_id_naming_other_recipients_is_a_conflict(stack: Stack) -> None:
    key, data = f"named-{uuid.uuid4().hex}", user(address("named"))

    first = _publish(stack, id=key, data=data, recipients=["user-a"])
    again = _publish(stack, id=key, data=data, recipients=["user-a"])
    other = _publish(stack, id=key, data=data, recipients=["user-b"])

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["duplicate"] is True
    assert other.status_code == 422
    assert other.json()["detail"][0]["type"] == "idempotency_conflict"


# ---- Routing to the recipients an event names ------------------------------------------


def _recipient(stack: Stack, rid: str, **fields: Any) -> None:
    with stack.client() as http:
        response = http.put(f"/v1/recipients/{rid}", json=fields)
    assert response.status_code in (200, 201), response.text


def _to_named(run: str, **fields: Any) -> dict[str, Any]:
    """A subscription without `to`: it sends to whoever this run's events name."""
    return {
        "name": f"named-{run}",
        "event": "user.registered",
        "channel": "email",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
        **fields,
    }


def _by_recipient(event: dict[str, Any], subscription: str) -> dict[str, dict[str, Any]]:
    return {
        n["recipient_id"]: n for n in event["notifications"] if n["subscription"] == subscription
    }


def test_a_subscription_without_to_sends_to_each_named_recipient_once(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    ada, bob, nomail = (f"{who}-{run}" for who in ("ada", "bob", "nomail"))
    ada_email, bob_email = address("ada"), address("bob")
    _recipient(stack, ada, email=ada_email)
    _recipient(stack, nomail, phone="+14155550100")

    with subscribed(stack, _to_named(run)):
        event_id = _publish(
            stack,
            data={**user(address("signup")), "run": run},
            recipients=[ada, {"id": bob, "email": bob_email}, nomail, ada],
        ).json()["id"]
        event = stack.settled(event_id)

    named = _by_recipient(event, f"named-{run}")
    assert {rid: n["status"] for rid, n in named.items()} == {
        ada: "sent",
        bob: "sent",
        nomail: "suppressed",
    }
    assert named[nomail]["last_error"].startswith("no_address: ")
    assert (len(smtp.to(ada_email)), len(smtp.to(bob_email))) == (1, 1)


def test_a_topic_reaches_each_member_and_routing_twice_sends_nothing_twice(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    members = {f"member-{n}-{run}": address(f"member{n}") for n in range(5)}
    for rid, email in members.items():
        _recipient(stack, rid, email=email)
    with stack.client() as http:
        added = http.put(f"/v1/topics/team-{run}/recipients", json={"recipients": list(members)})
    assert added.status_code == 200, added.text

    with subscribed(stack, _to_named(run)):
        event_id = _publish(
            stack, data={**user(address("topic")), "run": run}, topics=[f"team-{run}"]
        ).json()["id"]
        stack.settled(event_id)
        # The broker redelivers the routing task: nothing new is made or sent.
        foreign = Celery(broker=stack.env["HUB_BROKER_URL"])
        foreign.send_task("hub.route_many", args=[[event_id]], queue="events")
        foreign.close()
        event = stack.settled(event_id)

    named = _by_recipient(event, f"named-{run}")
    assert set(named) == set(members)
    smtp.wait_for(lambda sink: all(len(sink.to(email)) >= 1 for email in members.values()))
    assert [len(smtp.to(email)) for email in members.values()] == [1] * 5


def test_preferences_suppress_with_their_reason(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    quiet, no_mail = f"quiet-{run}", f"nomail-{run}"
    _recipient(
        stack, quiet, email=address("quiet"), preferences={"categories": {"marketing": False}}
    )
    _recipient(stack, no_mail, email=address("nomail"), preferences={"channels": {"email": False}})

    with subscribed(stack, _to_named(run, category="marketing")):
        event = stack.settled(
            _publish(
                stack, data={**user(address("prefs")), "run": run}, recipients=[quiet, no_mail]
            ).json()["id"]
        )

    named = _by_recipient(event, f"named-{run}")
    assert named[quiet]["status"] == named[no_mail]["status"] == "suppressed"
    assert named[quiet]["last_error"].startswith("category_off: ")
    assert named[no_mail]["last_error"].startswith("channel_off: ")


def test_to_may_name_a_topic(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    rid, email = f"oncall-{run}", address("oncall")
    _recipient(stack, rid, email=email)
    with stack.client() as http:
        http.put(f"/v1/topics/oncall-{run}/recipients", json={"recipients": [rid]})

    with subscribed(stack, _to_named(run, to=f"topic:oncall-{run}")):
        event = stack.settled(
            _publish(stack, data={**user(address("ref")), "run": run}).json()["id"]
        )

    assert _by_recipient(event, f"named-{run}")[rid]["status"] == "sent"
    assert len(smtp.to(email)) == 1


def test_templates_see_the_stored_recipient_as_profile(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    email_variant = {
        "subject": "For {{ profile.data.nickname }}",
        "text": "Hello {{ profile.id }} ({{ profile.locale }}).",
    }
    with stack.client() as http:
        saved = http.put(
            f"/v1/templates/profile-{run}", json={"variants": {"email": email_variant}}
        )
    assert saved.status_code == 200, saved.text
    rid, email = f"countess-{run}", address("countess")
    _recipient(stack, rid, email=email, locale="en-GB", data={"nickname": "Countess"})

    with subscribed(stack, _to_named(run, template=f"profile-{run}")):
        stack.settled(
            _publish(stack, data={**user(address("p")), "run": run}, recipients=[rid]).json()["id"]
        )

    [message] = smtp.to(email)
    assert message["Subject"] == "For Countess"
    assert f"Hello {rid} (en-GB)." in message.get_body(("plain",)).get_content()
