"""Spec: besides HTTP, events are published by Celery send_task, the CLI and the Python client."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from celery import Celery

from hub.client import HubClient
from tests.conftest import Stack, run_hub, wait_until
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def test_another_celery_app_publishes_with_send_task_knowing_only_the_broker(
    stack: Stack, smtp: SmtpSink
) -> None:
    to = address()
    foreign = Celery("shop", broker=stack.env["HUB_BROKER_URL"])

    foreign.send_task("hub.publish", kwargs={"type": "user.registered", "data": user(to)})

    smtp.wait_for(lambda sink: len(sink.to(to)) == 1)
    assert smtp.to(to)[0]["Subject"] == "Welcome, Ada Lovelace!"


def test_send_task_with_the_same_id_twice_sends_once(stack: Stack, smtp: SmtpSink) -> None:
    to, key = address(), f"k-{uuid.uuid4()}"
    foreign = Celery("shop", broker=stack.env["HUB_BROKER_URL"])
    marker = address("marker")

    data = user(to)
    for _ in range(2):
        foreign.send_task(
            "hub.publish", kwargs={"type": "user.registered", "data": data, "id": key}
        )
    # Published after the duplicates on the same queue, so once it has arrived
    # both duplicates have been handled too.
    foreign.send_task("hub.publish", kwargs={"type": "user.registered", "data": user(marker)})

    smtp.wait_for(lambda sink: len(sink.to(marker)) == 1)
    wait_until(lambda: len(smtp.to(to)) >= 1, what="the keyed email")
    assert len(smtp.to(to)) == 1


def test_cli_publish_delivers_and_prints_the_event_id(stack: Stack, smtp: SmtpSink) -> None:
    to = address()

    result = run_hub(stack, "publish", "user.registered", "--data", json.dumps(user(to)))

    assert result.returncode == 0, result.stderr
    event_id = json.loads(result.stdout)["id"]
    event = stack.settled(event_id)
    assert event["notifications"][0]["status"] == "sent"
    assert len(smtp.to(to)) == 1


def test_cli_publish_rejects_bad_json_naming_the_line(stack: Stack) -> None:
    result = run_hub(stack, "publish", "user.registered", "--data", '{"email":\n  oops}')

    assert result.returncode == 2
    assert "--data: invalid JSON at line 2" in result.stderr


def test_cli_publish_rejects_invalid_data_naming_the_field(stack: Stack) -> None:
    result = run_hub(stack, "publish", "user.registered", "--data", '{"user_id": "1", "name": "A"}')

    assert result.returncode == 2
    assert "data.email: 'email' is a required property" in result.stderr


def test_cli_creates_an_api_key_that_the_api_accepts(stack: Stack) -> None:
    result = run_hub(stack, "keys", "create", f"ci-{uuid.uuid4().hex[:6]}")

    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("hub_")
    with stack.client(api_key=key) as http:
        assert http.get("/v1/events/evt_none").status_code == 404


def test_python_client_publishes_and_reads_status(stack: Stack, smtp: SmtpSink) -> None:
    to = address()
    with HubClient(stack.base_url, stack.api_key) as hub:
        accepted = hub.publish("user.registered", user(to), id=f"client-{uuid.uuid4()}")
        assert accepted["status"] == "accepted"
        event = stack.settled(accepted["id"])
        assert hub.event(accepted["id"])["notifications"] == event["notifications"]
        with pytest.raises(httpx.HTTPStatusError) as rejected:
            hub.publish("user.registered", {"email": to})
    assert rejected.value.response.status_code == 422
    assert len(smtp.to(to)) == 1


def test_python_client_manages_recipients_topics_and_subscriptions(
    stack: Stack, smtp: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:12]
    rid, email = f"client-{run}", address("client")
    with HubClient(stack.base_url, stack.api_key) as hub:
        hub.put_recipient(rid, email=email, locale="fr")
        assert hub.recipient(rid)["locale"] == "fr"
        hub.add_to_topic(f"clients-{run}", [rid])
        hub.subscribe(
            {
                "name": f"client-{run}",
                "event": "user.registered",
                "channel": "email",
                "template": "user.registered",
                "filter": {"data.run": {"eq": run}},
            }
        )
        try:
            accepted = hub.publish(
                "user.registered", {**user(address()), "run": run}, topics=[f"clients-{run}"]
            )
            event = stack.settled(accepted["id"])
        finally:
            hub.unsubscribe(f"client-{run}")

    [mine] = [n for n in event["notifications"] if n["subscription"] == f"client-{run}"]
    assert (mine["recipient_id"], mine["status"]) == (rid, "sent")
    assert len(smtp.to(email)) == 1
