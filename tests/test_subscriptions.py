"""Spec: subscriptions made at run time apply to the next event on every worker, with no restart.

Given the running stack (API, a worker of two processes, the SMTP sink):
a subscription created, replaced or deleted through ``/v1/subscriptions``
(or ``hub subscriptions``) changes what the very next matching event sends.
``event`` may be a glob, ``filter`` a JSON condition on the event. Settings
subscriptions are listed too, read-only. A bad subscription gets 422 naming
the field, and is never stored.

The stack is shared by the whole session: every subscription here filters on
a ``data.run`` token only its own test's events carry, and is deleted when
its test ends, so no other test's events ever match one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from hub import keys
from tests.conftest import Stack, run_hub
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def new_run() -> str:
    return uuid.uuid4().hex[:12]


def copy_to(run: str, **fields: Any) -> dict[str, Any]:
    """A subscription copying this run's sign-ups to ``data.cc`` with the welcome template."""
    return {
        "name": f"copy-{run}",
        "event": "user.registered",
        "channel": "email",
        "to": "{{ data.cc }}",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
        **fields,
    }


def signup(run: str, **extra: str) -> dict[str, Any]:
    """A user.registered event of this run with its own welcome address and copy address."""
    return {**user(address()), "run": run, "cc": address("cc"), **extra}


@contextmanager
def subscribed(stack: Stack, definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A subscription made through the API for the duration of the block."""
    with stack.client() as http:
        response = http.post("/v1/subscriptions", json=definition)
    assert response.status_code == 201, response.text
    try:
        yield response.json()
    finally:
        with stack.client() as http:
            http.delete(f"/v1/subscriptions/{definition['name']}")


def all_items(http: Any) -> list[dict[str, Any]]:
    response = http.get("/v1/subscriptions", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


@contextmanager
def subscribed_all(stack: Stack, definitions: list[dict[str, Any]]) -> Iterator[None]:
    """Several subscriptions made through the API for the duration of the block."""
    with ExitStack() as subscriptions:
        for definition in definitions:
            subscriptions.enter_context(subscribed(stack, definition))
        yield


def sent_by(stack: Stack, event_id: str, subscription: str) -> list[dict[str, Any]]:
    """The settled event's notifications made by ``subscription``."""
    event = stack.settled(event_id)
    return [n for n in event["notifications"] if n["subscription"] == subscription]


def routed_by_both_processes(
    stack: Stack, smtp: SmtpSink, run: str
) -> list[tuple[dict[str, Any], str]]:
    """Two events of ``run``, each routed by a different worker process; ``(data, event id)``.

    The first one's welcome address is held at the SMTP sink, so the process
    that routes it (and sends it itself) stays busy; the second is published
    meanwhile, and only the other process is free to route it.
    """
    busy, other = signup(run), signup(run)
    smtp.holding.add(busy["email"])
    try:
        first = stack.publish("user.registered", busy)
        smtp.wait_for(lambda sink: sink.tries[busy["email"]] >= 1)
        second = stack.publish("user.registered", other)
        stack.settled(second)
    finally:
        smtp.holding.discard(busy["email"])
    stack.settled(first)
    return [(busy, first), (other, second)]


def test_a_subscription_created_through_the_api_applies_to_the_next_event_on_each_process(
    stack: Stack, smtp: SmtpSink
) -> None:
    # Given each worker process has routed an event of this run without it
    run = new_run()
    for _, event_id in routed_by_both_processes(stack, smtp, run):
        assert sent_by(stack, event_id, f"copy-{run}") == []

    # When a subscription is created through the API
    with subscribed(stack, copy_to(run)) as created:
        # Then the next event on each process, with no restart, sends its copy
        for data, event_id in routed_by_both_processes(stack, smtp, run):
            [copy] = sent_by(stack, event_id, f"copy-{run}")
            assert copy["status"] == "sent" and copy["recipient"] == data["cc"]
            [email] = smtp.to(data["cc"])
            assert email["Subject"] == "Welcome, Ada Lovelace!"
            assert len(smtp.to(data["email"])) == 1  # the settings subscription still sends
    assert created["source"] == "api"
    assert created["definition"]["filter"] == {"data.run": {"eq": run}}


def test_deleting_a_subscription_stops_it_with_the_next_event_on_each_process(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = new_run()
    with subscribed(stack, copy_to(run)):
        for _, event_id in routed_by_both_processes(stack, smtp, run):
            assert len(sent_by(stack, event_id, f"copy-{run}")) == 1

        with stack.client() as http:
            deleted = http.delete(f"/v1/subscriptions/copy-{run}")
        assert deleted.status_code == 204

        for data, event_id in routed_by_both_processes(stack, smtp, run):
            assert sent_by(stack, event_id, f"copy-{run}") == []
            assert smtp.to(data["cc"]) == []
        with stack.client() as http:
            assert http.get(f"/v1/subscriptions/copy-{run}").status_code == 404


def test_replacing_a_subscription_applies_the_new_definition_to_the_next_event(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = new_run()
    with subscribed(stack, copy_to(run)):
        first = signup(run)
        assert len(sent_by(stack, stack.publish("user.registered", first), f"copy-{run}")) == 1

        # When it is replaced by one that sends to the welcome address instead
        with stack.client() as http:
            replaced = http.put(
                f"/v1/subscriptions/copy-{run}", json=copy_to(run, to="{{ data.email }}")
            )
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["definition"]["to"] == "{{ data.email }}"

        # Then the next events go there, and no longer to the copy address
        for data in [signup(run) for _ in range(4)]:
            [copy] = sent_by(stack, stack.publish("user.registered", data), f"copy-{run}")
            assert copy["recipient"] == data["email"]
            assert smtp.to(data["cc"]) == []
            assert len(smtp.to(data["email"])) == 2  # welcome-email and the replaced copy


def test_a_glob_event_matches_every_type_it_names_and_no_other(stack: Stack) -> None:
    run = new_run()
    with subscribed(stack, copy_to(run, name=f"users-{run}", event="user.*")):
        registered = stack.publish("user.registered", signup(run))
        failed = stack.publish(
            "task.failed",
            {
                "service": "billing",
                "task_name": "charge",
                "task_id": "t-1",
                "exception": "ValueError",
                "message": "boom",
                "run": run,
                "cc": address("cc"),
            },
        )

        assert len(sent_by(stack, registered, f"users-{run}")) == 1
        assert sent_by(stack, failed, f"users-{run}") == []


def test_a_filter_matches_only_the_events_it_describes(stack: Stack, smtp: SmtpSink) -> None:
    run = new_run()
    pro_only = {"data.run": {"eq": run}, "data.plan": {"in": ["pro"]}}
    with subscribed(stack, copy_to(run, name=f"pro-{run}", filter=pro_only)):
        pro, free, no_plan = signup(run, plan="pro"), signup(run, plan="free"), signup(run)
        published = {
            key: stack.publish("user.registered", data)
            for key, data in (("pro", pro), ("free", free), ("none", no_plan))
        }

        assert len(sent_by(stack, published["pro"], f"pro-{run}")) == 1
        assert sent_by(stack, published["free"], f"pro-{run}") == []
        assert sent_by(stack, published["none"], f"pro-{run}") == []
        assert len(smtp.to(pro["cc"])) == 1
        assert smtp.to(free["cc"]) == smtp.to(no_plan["cc"]) == []


def test_a_subscription_without_to_sends_nothing_for_an_event_naming_no_recipients(
    stack: Stack,
) -> None:
    run = new_run()
    definition = copy_to(run)
    del definition["to"]
    with subscribed(stack, definition) as created:
        assert created["definition"]["to"] == ""
        assert sent_by(stack, stack.publish("user.registered", signup(run)), f"copy-{run}") == []


def test_settings_subscriptions_are_listed_read_only(stack: Stack) -> None:
    run = new_run()
    with subscribed(stack, copy_to(run)), stack.client() as http:
        items = all_items(http)
        by_name = {item["name"]: item for item in items}

        assert by_name["welcome-email"]["source"] == "settings"
        assert by_name["welcome-email"]["definition"]["event"] == "user.registered"
        assert by_name[f"copy-{run}"]["source"] == "api"
        assert by_name[f"copy-{run}"]["definition"]["priority"] == "normal"
        # Settings ones first, in file order
        sources = [item["source"] for item in items]
        assert sources == sorted(sources, key=lambda source: source != "settings")
        assert http.get("/v1/subscriptions/welcome-email").json()["source"] == "settings"

        welcome = by_name["welcome-email"]["definition"]
        assert http.put("/v1/subscriptions/welcome-email", json=welcome).status_code == 409
        deleted = http.delete("/v1/subscriptions/welcome-email")
        assert deleted.status_code == 409
        assert "settings" in deleted.json()["detail"]
        assert http.post("/v1/subscriptions", json=welcome).status_code == 409


def test_a_taken_name_is_409_and_an_unknown_one_404(stack: Stack) -> None:
    run = new_run()
    with subscribed(stack, copy_to(run)), stack.client() as http:
        again = http.post("/v1/subscriptions", json=copy_to(run, channel="sms", to="+14155550100"))
        assert again.status_code == 409
        assert http.get(f"/v1/subscriptions/copy-{run}").json()["definition"]["channel"] == "email"

        unknown = f"nothing-{run}"
        assert http.get(f"/v1/subscriptions/{unknown}").status_code == 404
        assert http.delete(f"/v1/subscriptions/{unknown}").status_code == 404
        put = http.put(f"/v1/subscriptions/{unknown}", json=copy_to(run, name=unknown))
        assert put.status_code == 404


@pytest.mark.parametrize(
    ("change", "loc", "says"),
    [
        ({"channel": "pigeon"}, ["body", "channel"], "unknown channel 'pigeon'"),
        ({"event": "user.registred"}, ["body", "event"], "not in the event catalog"),
        ({"event": "usr.*"}, ["body", "event"], "matches no event type"),
        ({"template": "no-such-template"}, ["body", "template"], "no template named"),
        ({"to": "{{ data.cc"}, ["body", "to"], ""),
        ({"filter": {"data.plan": {"contains": "pro"}}}, ["body", "filter"], "'contains'"),
        ({"filter": {"plan": {"eq": "pro"}}}, ["body", "filter"], "'plan'"),
        ({"delay": "soon"}, ["body", "delay"], "delay"),
        ({"digest": "0s"}, ["body", "digest"], "digest"),
        ({"priority": "urgent"}, ["body", "priority"], "critical"),
        ({"group_wait": "5 minutes"}, ["body", "group_wait"], "group_wait"),
        ({"group_by": ["service"]}, ["body", "group_by"], "group_by[0]"),
        ({"escalation": [{"after": "15m"}]}, ["body", "escalation", 0, "channel"], ""),
        ({"colour": "red"}, ["body", "colour"], ""),
    ],
)
def test_a_bad_subscription_is_422_naming_the_field_and_is_not_stored(
    stack: Stack, change: dict[str, Any], loc: list[Any], says: str
) -> None:
    definition = copy_to(new_run(), **change)
    with stack.client() as http:
        response = http.post("/v1/subscriptions", json=definition)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc
        assert says in error["msg"]
        assert http.get(f"/v1/subscriptions/{definition['name']}").status_code == 404


def test_a_filter_error_names_the_path_and_operator_with_its_own_type(stack: Stack) -> None:
    definition = copy_to(new_run(), filter={"or": [{"data.plan": {"in": "pro"}}]})
    with stack.client() as http:
        response = http.post("/v1/subscriptions", json=definition)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "invalid_filter"
    assert "or[0].data.plan" in error["msg"] and "'in'" in error["msg"]


def test_a_read_key_may_list_subscriptions_but_not_change_them(stack: Stack) -> None:
    run = new_run()
    reader = keys.create_key(stack.database_url, f"reader-{run}", [keys.READ])
    with subscribed(stack, copy_to(run)), stack.client(reader) as http:
        assert http.get("/v1/subscriptions").status_code == 200
        assert http.get(f"/v1/subscriptions/copy-{run}").status_code == 200
        posted = http.post("/v1/subscriptions", json=copy_to(new_run()))
        assert posted.status_code == 403
        assert "admin" in posted.json()["detail"]
        assert http.delete(f"/v1/subscriptions/copy-{run}").status_code == 403
        assert http.put(f"/v1/subscriptions/copy-{run}", json=copy_to(run)).status_code == 403


def test_the_list_pages_with_a_cursor_and_refuses_one_it_did_not_give(stack: Stack) -> None:
    runs = [new_run() for _ in range(3)]
    with subscribed_all(stack, [copy_to(run) for run in runs]), stack.client() as http:
        whole = http.get("/v1/subscriptions", params={"limit": 1000}).json()
        assert whole["next_cursor"] is None

        paged, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/subscriptions", params=params).json()
            assert len(page["items"]) <= 2
            paged += page["items"]
            if (cursor := page["next_cursor"]) is None:
                break

        assert [item["name"] for item in paged] == [item["name"] for item in whole["items"]]
        assert {f"copy-{run}" for run in runs} <= {item["name"] for item in paged}
        bad = http.get("/v1/subscriptions", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_the_cli_lists_adds_and_removes_subscriptions_that_apply_at_once(
    stack: Stack, smtp: SmtpSink, tmp_path: Path
) -> None:
    run = new_run()
    spec = tmp_path / "sub.json"
    spec.write_text(json.dumps(copy_to(run, name=f"cli-{run}")))

    try:
        added = run_hub(stack, "subscriptions", "add", "--file", str(spec))
        assert added.returncode == 0, added.stderr
        data = signup(run)
        assert len(sent_by(stack, stack.publish("user.registered", data), f"cli-{run}")) == 1
        assert len(smtp.to(data["cc"])) == 1

        listed = run_hub(stack, "subscriptions", "list")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
        assert rows["welcome-email"] == "settings"
        assert rows[f"cli-{run}"] == "api"

        again = run_hub(stack, "subscriptions", "add", "--file", str(spec))
        assert again.returncode == 2 and "exists" in again.stderr
    finally:
        removed = run_hub(stack, "subscriptions", "remove", f"cli-{run}")
    assert removed.returncode == 0, removed.stderr
    data = signup(run)
    assert sent_by(stack, stack.publish("user.registered", data), f"cli-{run}") == []
    assert smtp.to(data["cc"]) == []


def test_the_cli_refuses_a_bad_subscription_and_a_settings_one_naming_why(
    stack: Stack, tmp_path: Path
) -> None:
    run = new_run()
    bad = run_hub(
        stack,
        "subscriptions",
        "add",
        *("--name", f"cli-{run}", "--event", "user.registered", "--channel", "email"),
        *("--template", "user.registered", "--filter", '{"data.plan": {"in": "pro"}}'),
    )
    assert bad.returncode == 2
    assert "filter: data.plan: 'in' takes a list" in bad.stderr

    settings_one = run_hub(stack, "subscriptions", "remove", "welcome-email")
    assert settings_one.returncode == 2
    assert "settings file" in settings_one.stderr
