"""Spec: a channel with several providers fails over, and shows each provider's circuit.

The primary SMTP relay refuses connections; the backup is a real SMTP
server. Every email arrives once, through the backup, and after enough
refusals the primary's circuit opens so later sends skip it. A provider may
be of another kind: SMS through Twilio, then through an Apprise gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack, other_redis_db, running_stack
from tests.http_receiver import HttpReceiver
from tests.smtp_sink import SmtpSink, _free_port
from tests.test_publish_to_email import address, user


@pytest.fixture
def two_relays(tmp_path: Path, broker_url: str, smtp: SmtpSink) -> Iterator[Stack]:
    dead_port = _free_port()  # nothing listens here: connection refused
    providers = [
        {"name": "primary", "host": "127.0.0.1", "port": dead_port},
        {"name": "backup", "host": "127.0.0.1", "port": smtp.port},  # type: ignore[attr-defined]
    ]
    env = {"HUB_CHANNELS__EMAIL__PROVIDERS": json.dumps(providers)}
    with running_stack(tmp_path, other_redis_db(broker_url), smtp, extra_env=env) as stack:
        yield stack


def test_the_backup_relay_sends_every_email_once_when_the_primary_refuses(
    two_relays: Stack, smtp: SmtpSink
) -> None:
    recipients = [address(f"failover-{n}") for n in range(8)]

    events = [
        two_relays.settled(two_relays.publish("user.registered", user(to))) for to in recipients
    ]

    for to, event in zip(recipients, events, strict=True):
        [email] = event["notifications"]
        assert (email["status"], email["provider"]) == ("sent", "backup")
        assert email["attempts"] == 1  # failover happens within the attempt
        assert len(smtp.to(to)) == 1


def test_the_channels_endpoint_shows_the_primarys_open_circuit(
    two_relays: Stack, smtp: SmtpSink
) -> None:
    for n in range(6):
        two_relays.settled(two_relays.publish("user.registered", user(address(f"circuit-{n}"))))

    with two_relays.client() as http:
        listed = http.get("/v1/channels").json()

    assert listed["next_cursor"] is None
    email = {item["provider"]: item for item in listed["items"] if item["channel"] == "email"}
    assert set(email) == {"primary", "backup"}
    assert email["primary"]["state"] == "open"
    assert email["primary"]["since"] is not None
    assert "Connect" in (email["primary"]["last_error"] or "")
    assert email["backup"]["state"] == "closed"
    assert {item["channel"] for item in listed["items"]} >= {"email", "sms", "slack"}


@pytest.fixture
def twilio_then_apprise(
    tmp_path: Path, broker_url: str, smtp: SmtpSink
) -> Iterator[tuple[Stack, HttpReceiver]]:
    dead_port = _free_port()  # Twilio's API is unreachable: connection refused
    receiver = HttpReceiver().start()
    providers = [
        {
            "name": "twilio",
            "account_sid": "AC" + "0" * 32,
            "auth_token": "token",
            "from_number": "+14155550000",
            "api_base": f"http://127.0.0.1:{dead_port}",
        },
        {
            "name": "gateway",
            "via": "apprise",
            "urls": [f"json://127.0.0.1:{receiver.port}/sms/{{recipient}}"],
        },
    ]
    env = {"HUB_CHANNELS__SMS__PROVIDERS": json.dumps(providers)}
    with running_stack(tmp_path, other_redis_db(broker_url), smtp, extra_env=env) as stack:
        yield stack, receiver
    receiver.stop()


def test_sms_fails_over_from_twilio_to_an_apprise_gateway_naming_the_recipient(
    twilio_then_apprise: tuple[Stack, HttpReceiver],
) -> None:
    stack, receiver = twilio_then_apprise
    numbers = [f"+1415555{n:04d}" for n in range(3)]

    events = [
        stack.settled(stack.publish("user.registered", user(address("sms"), phone=number)))
        for number in numbers
    ]

    for event in events:
        [sms] = [n for n in event["notifications"] if n["channel"] == "sms"]
        assert (sms["status"], sms["provider"]) == ("sent", "gateway")
    received = receiver.wait_for(len(numbers))
    assert sorted(request.path for request in received) == [f"/sms/{n}" for n in numbers]
    assert all("Ada" in json.loads(request.body)["message"] for request in received)
