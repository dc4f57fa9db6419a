"""Spec: addresses cannot inject headers or misroute, and every header the hub writes is safe.

Given a running hub (API, worker, Redis, a real aiosmtpd server), event data
that reaches a ``to`` expression is one address, validated when the message is
rendered: a bad one fails its notification with reason ``invalid_address`` and
never reaches the SMTP server. The email writer refuses CR and LF in every
header value, folds long ones and encodes non-ASCII ones (RFC 5322, RFC 2047).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.channels.base import Message
from hub.channels.email import EmailChannel, EmailSettings, build_email
from hub.errors import PermanentError
from tests.conftest import Stack
from tests.security.hostile_hub import hostile_stack
from tests.smtp_sink import SmtpSink, _free_port
from tests.test_publish_to_email import address, user

SETTINGS = """
[events."test.hostile"]
description = "Data without a schema: whatever it holds reaches the subscriptions below."

[[subscriptions]]
name = "hostile-to"
event = "test.hostile"
channel = "email"
to = "{{ data.to }}"
template = "hostile"
when = "data.to is defined"

[[subscriptions]]
name = "hostile-built"
event = "test.hostile"
channel = "email"
to = "{{ data.local }}@example.com"
template = "hostile"
when = "data.local is defined"
"""
TEMPLATES = {"hostile": {"subject.txt": "{{ data.subject }}", "body.txt": "{{ data.body }}"}}

INJECTIONS = [
    "\r\nX-Injected: yes\r\nSubject: You won",
    "\nBcc: victim@example.com",
    "\rX-Injected: yes",
    "\r\n\r\nA body the sender wrote",
]


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("hostile-addresses")
    with hostile_stack(home, broker_url, smtp, SETTINGS, TEMPLATES) as stack:
        yield stack


def hostile(hub: Stack, **data: object) -> dict[str, Any]:
    """Publish a ``test.hostile`` event and return it once every notification is final."""
    data = {"subject": "Hello", "body": "Hi.", **data}
    return hub.settled(hub.publish("test.hostile", data))


def never_reached_smtp(smtp: SmtpSink, marker: str) -> bool:
    """Nothing carrying ``marker`` was offered to, or received by, the SMTP server."""
    offered = any(marker in recipient for recipient in smtp.tries)
    received = any(marker in str(r.message) or marker in r.recipient for r in smtp.messages)
    return not (offered or received)


def injected_headers(smtp: SmtpSink) -> list[str]:
    return [r.recipient for r in smtp.messages if "X-Injected" in r.message or r.message["Bcc"]]


# ---- Addresses from event data, through a running hub ----


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "blank-line"])
def test_an_address_carrying_header_injection_fails_invalid_address_and_never_reaches_smtp(
    hub: Stack, smtp: SmtpSink, injection: str
) -> None:
    local = f"x-{uuid.uuid4().hex[:10]}"

    event = hostile(hub, to=f"{local}@example.com{injection}")

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["last_error"].startswith("invalid_address: ")
    assert notification["attempts"] == 1
    assert never_reached_smtp(smtp, local)
    assert injected_headers(smtp) == []


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "blank-line"])
def test_an_address_built_from_injected_data_fails_invalid_address(
    hub: Stack, smtp: SmtpSink, injection: str
) -> None:
    # data.local passes any publish check; the address is made by the `to` expression.
    local = f"x-{uuid.uuid4().hex[:10]}"

    event = hostile(hub, local=f"{local}{injection}")

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["last_error"].startswith("invalid_address: ")
    assert never_reached_smtp(smtp, local)


def test_the_shipped_subscription_never_lets_an_injected_email_reach_smtp(
    hub: Stack, smtp: SmtpSink
) -> None:
    local = f"x-{uuid.uuid4().hex[:10]}"
    data = user(f"{local}@example.com\r\nX-Injected: yes\r\nSubject: You won")

    with hub.client() as http:
        response = http.post("/v1/events", json={"type": "user.registered", "data": data})

    # Refused at publish (422), or accepted and then failed at render: never sent.
    if response.status_code == 202:
        [notification] = hub.settled(response.json()["id"])["notifications"]
        assert (notification["status"], notification["channel"]) == ("failed", "email")
        assert notification["last_error"].startswith("invalid_address: ")
    else:
        assert response.status_code == 422
    assert never_reached_smtp(smtp, local)
    assert injected_headers(smtp) == []


@pytest.mark.parametrize("local", ["o'brien", "a&b", "ada+tag", "o'brien&ada+tag"])
def test_apostrophes_ampersands_and_plus_are_delivered_as_written(
    hub: Stack, smtp: SmtpSink, local: str
) -> None:
    to = f"{local}-{uuid.uuid4().hex[:8]}@example.com"

    event = hub.settled(hub.publish("user.registered", user(to)))

    [notification] = event["notifications"]
    assert (notification["status"], notification["recipient"]) == ("sent", to)
    [email] = smtp.to(to)  # the envelope recipient, exactly as written
    assert email["To"] == to


@pytest.mark.parametrize("separator", [",", ", ", ";", " ", "\t"])
def test_a_to_that_renders_several_addresses_is_one_failed_notification(
    hub: Stack, smtp: SmtpSink, separator: str
) -> None:
    batch = uuid.uuid4().hex[:8]
    addresses = [f"fan-{batch}-{i}@example.com" for i in range(500)]

    event = hostile(hub, to=separator.join(addresses))

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["last_error"].startswith("invalid_address: ")
    assert "several addresses" in notification["last_error"]
    assert never_reached_smtp(smtp, f"fan-{batch}")


@pytest.mark.parametrize(
    "bad",
    [
        "not-an-address-{u}",
        "{u}@",
        "@{u}.example.com",
        "{u}@@example.com",
        "{u}@exa mple.com",
        "{u}@localhost",
        "Ada <{u}@example.com>",
        '"ada lovelace {u}"@example.com',
        "{u}@[127.0.0.1]",
        "{u}" + "a" * 250 + "@example.com",
        "{u}@" + "x" * 600 + ".com",
    ],
    ids=[
        "no-at", "no-domain", "no-local", "two-ats", "space", "special-use-domain",
        "display-name", "quoted-local", "ip-literal", "too-long", "longer-than-storage",
    ],
)  # fmt: skip
def test_a_bad_address_fails_invalid_address_and_never_reaches_smtp(
    hub: Stack, smtp: SmtpSink, bad: str
) -> None:
    marker = uuid.uuid4().hex[:10]

    event = hostile(hub, to=bad.format(u=marker))

    [notification] = event["notifications"]
    assert notification["status"] == "failed"
    assert notification["last_error"].startswith("invalid_address: ")
    assert notification["attempts"] == 1
    assert never_reached_smtp(smtp, marker)


def test_a_to_that_renders_nothing_produces_no_notification(hub: Stack) -> None:
    assert hostile(hub, to="   ")["notifications"] == []


def test_an_international_domain_is_sent_in_its_ascii_form(hub: Stack, smtp: SmtpSink) -> None:
    local = f"ada-{uuid.uuid4().hex[:8]}"

    event = hostile(hub, to=f"{local}@bücher.de")

    [notification] = event["notifications"]
    assert notification["status"] == "sent"
    [email] = smtp.to(f"{local}@xn--bcher-kva.de")
    assert email["To"] == f"{local}@xn--bcher-kva.de"


def test_an_international_mailbox_is_delivered_through_a_server_offering_smtputf8(
    hub: Stack, smtp: SmtpSink
) -> None:
    to = f"jörg-{uuid.uuid4().hex[:8]}@bücher.de"  # the test sink offers SMTPUTF8

    event = hostile(hub, to=to)

    [notification] = event["notifications"]
    assert (notification["status"], notification["recipient"]) == ("sent", to)
    [email] = smtp.to(to)
    assert email["To"] == to


def test_a_phone_field_with_several_numbers_is_one_failed_sms(hub: Stack) -> None:
    to = address()

    event = hub.settled(hub.publish("user.registered", user(to, phone="+14155550100,+14155550101")))

    [sms] = [n for n in event["notifications"] if n["channel"] == "sms"]
    assert sms["status"] == "failed"
    assert sms["recipient"] == "+14155550100,+14155550101"


def test_after_hostile_addresses_a_normal_event_is_delivered_once(
    hub: Stack, smtp: SmtpSink
) -> None:
    hostile(hub, to="x@example.com\r\nX-Injected: yes")
    to = address()

    event = hub.settled(hub.publish("user.registered", user(to)))

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    assert len(smtp.to(to)) == 1


# ---- Headers rendered from event data ----


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "blank-line"])
def test_line_breaks_in_a_subject_from_event_data_become_spaces(
    hub: Stack, smtp: SmtpSink, injection: str
) -> None:
    to = address()

    event = hub.settled(hub.publish("user.registered", {**user(to), "name": f"Ada{injection}"}))

    assert [n["status"] for n in event["notifications"]] == ["sent"]
    [email] = smtp.to(to)
    assert email["Subject"] == f"Welcome, Ada {' '.join(injection.split())}!"
    assert "X-Injected" not in email and email["Bcc"] is None


def test_a_long_non_ascii_subject_from_event_data_arrives_whole(hub: Stack, smtp: SmtpSink) -> None:
    to = address()
    subject = "Grüße aus Köln, 東京 and a 🎉 " * 40 + "x" * 300

    hostile(hub, to=to, subject=subject)

    [email] = smtp.to(to)
    assert email["Subject"] == " ".join(subject.split())  # a subject is one line
    assert not email.defects and not email["Subject"].defects


# ---- The email writer on its own: what the standard library's policy enforces ----


def message(subject: str = "Hello", recipient: str = "ada@example.com") -> Message:
    return Message(
        notification_id=f"ntf_{uuid.uuid4().hex}",
        event_id="evt_1",
        event_type="user.registered",
        recipient=recipient,
        subject=subject,
        text="plain body\n",
        html="<p>html body</p>\n",
    )


def header_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize(
    "subject",
    [
        "word " * 2000 + "end",
        "x" * 5000,
        "Grüße " * 500 + "Ende",
        "🎉" * 300,
        "Hello =?utf-8?b?SGk=?= there",
        "tab\there and a NUL \x00 and a bell \x07",
    ],
    ids=["many-words", "one-long-word", "non-ascii", "emoji", "encoded-word-lookalike", "controls"],
)
def test_header_values_are_folded_to_78_characters_and_read_back_as_written(
    subject: str,
) -> None:
    data = build_email(message(subject), "Hub <hub@example.com>").data

    assert all(len(line) <= 78 for line in header_lines(data))
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Subject"] == subject
    assert not parsed.defects


def test_a_60_mb_subject_reaches_the_wire_folded() -> None:
    subject = "word " * 12_000_000 + "end"

    data = build_email(message(subject), "Hub <hub@example.com>").data

    assert max(len(line) for line in header_lines(data)) <= 78


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "blank-line"])
def test_the_writer_refuses_a_line_break_in_any_header_value(injection: str) -> None:
    with pytest.raises(PermanentError, match="invalid_header"):
        build_email(message(subject=f"Hi{injection}"), "Hub <hub@example.com>")
    with pytest.raises(PermanentError, match="invalid_header"):
        build_email(message(recipient=f"ada@example.com{injection}"), "Hub <hub@example.com>")


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "blank-line"])
def test_a_from_address_with_a_line_break_is_a_settings_error(injection: str) -> None:
    with pytest.raises(ValidationError, match="from_address"):
        EmailSettings(from_address=f"Hub{injection} <hub@example.com>")


def test_a_non_ascii_display_name_is_encoded_and_folded() -> None:
    name = "Benachrichtigungen der Bücherei Köln, Abteilung für Öffentlichkeitsarbeit"

    data = build_email(message(), f'"{name}" <hub@example.com>').data

    assert all(len(line) <= 78 for line in header_lines(data))
    parsed = message_from_bytes(data, policy=policy.default)
    # Python's parser puts a space between adjacent encoded words of a display
    # name, which RFC 2047 readers drop; the standard library's own output reads
    # back the same way.
    assert " ".join(parsed["From"].addresses[0].display_name.split()) == name
    assert parsed["From"].addresses[0].addr_spec == "hub@example.com"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=st.text(max_size=400), recipient=st.text(max_size=80))
def test_any_subject_and_recipient_either_are_refused_or_write_exactly_the_expected_headers(
    subject: str, recipient: str
) -> None:
    try:
        data = build_email(message(subject, recipient), "Hub <hub@example.com>").data
    except PermanentError:
        return
    parsed = message_from_bytes(data, policy=policy.default)
    names = [name.lower() for name in parsed]
    assert names == [
        "from", "to", "subject", "date", "message-id", "x-hub-event", "mime-version",
        "content-type",
    ]  # fmt: skip
    assert all(b"\r" not in line and b"\n" not in line for line in header_lines(data))


# ---- The email channel against real SMTP servers, with and without SMTPUTF8 ----


@pytest.fixture
def utf8_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=True)
    controller.start()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


@pytest.fixture
def ascii_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=False)
    controller.start()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def channel(sink: SmtpSink, tmp_path: Path) -> EmailChannel:
    settings = EmailSettings(host="127.0.0.1", port=sink.port, pool_size=1)  # type: ignore[attr-defined]
    return EmailChannel(settings, tmp_path / "outbox")


def send(email: EmailChannel, *messages: Message) -> list[object]:
    async def scenario() -> list[object]:
        results: list[object] = []
        try:
            for m in messages:
                try:
                    results.append(await email.send(m))
                except PermanentError as exc:
                    results.append(exc)
        finally:
            await email.close()
        return results

    return asyncio.run(scenario())


def test_an_international_mailbox_is_sent_with_smtputf8_when_the_server_offers_it(
    utf8_sink: SmtpSink, tmp_path: Path
) -> None:
    to = "jörg.müller@bücher.de"

    send(channel(utf8_sink, tmp_path), message(recipient=to))

    [email] = utf8_sink.to(to)
    assert email["To"] == to


def test_without_smtputf8_an_international_mailbox_fails_and_the_connection_stays_usable(
    ascii_sink: SmtpSink, tmp_path: Path
) -> None:
    after = message()

    [error, _] = send(channel(ascii_sink, tmp_path), message(recipient="jörg@example.com"), after)

    assert isinstance(error, PermanentError)
    assert "SMTPUTF8" in str(error)
    assert ascii_sink.tries == {after.recipient: 1}
    assert len(ascii_sink.to(after.recipient)) == 1
    assert ascii_sink.connections == 1


@pytest.mark.parametrize("bad", ["x@example.com\r\nX-Injected: yes", "a@b.com, c@d.com", "nope"])
def test_the_channel_refuses_a_bad_address_before_any_network_call(
    ascii_sink: SmtpSink, tmp_path: Path, bad: str
) -> None:
    [error] = send(channel(ascii_sink, tmp_path), message(recipient=bad))

    assert isinstance(error, PermanentError)
    assert "invalid_address" in str(error)
    assert ascii_sink.connections == 0


def test_the_outbox_refuses_a_bad_address_too(tmp_path: Path) -> None:
    email = EmailChannel(EmailSettings(), tmp_path / "outbox")

    [error] = send(email, message(recipient="x@example.com\r\nX-Injected: yes"))

    assert isinstance(error, PermanentError)
    assert not list((tmp_path / "outbox").glob("*"))
