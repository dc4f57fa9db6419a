"""Spec: the SMS channel against a local Twilio over HTTP, with the real twilio client."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.channels.base import Message, Receipt
from hub.channels.http import parse_retry_after
from hub.channels.sms import SmsChannel, SmsSettings, count_segments, truncate_to_segments
from hub.errors import ChannelError, ConfigError, OutcomeUnknown, PermanentError, TransientError
from tests.twilio_fake import Reply, TwilioFake, start_fake

FROM = "+15005550006"
TO_NATIONAL = "(415) 555-2671"
TO = "+14155552671"
CALLBACK = "https://hub.example.com/v1/callbacks/twilio"


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    fake = start_fake()
    yield fake
    fake.stop()


def settings(fake: TwilioFake, **options: object) -> SmsSettings:
    values: dict[str, object] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": FROM,
        "api_base": fake.base_url,
        **options,
    }
    return SmsSettings.model_validate(values)


def message(recipient: str = TO_NATIONAL, text: str = "Your code is 123456") -> Message:
    return Message(
        notification_id=f"ntf_{uuid.uuid4().hex}",
        event_id="evt_1",
        event_type="user.registered",
        recipient=recipient,
        text=text,
    )


async def send_with(channel: SmsChannel, *messages: Message) -> list[Receipt | BaseException]:
    """Start the channel, send ``messages`` concurrently, close; outcomes in order."""
    await channel.start()
    try:
        return await asyncio.gather(*(channel.send(m) for m in messages), return_exceptions=True)
    finally:
        await channel.close()


def send(config: SmsSettings, tmp_path: Path, sent: Message | None = None) -> Receipt:
    [outcome] = asyncio.run(send_with(SmsChannel(config, tmp_path / "outbox"), sent or message()))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def failure(config: SmsSettings, tmp_path: Path, sent: Message | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        send(config, tmp_path, sent)
    return caught.value


# -- sending ------------------------------------------------------------------


def test_a_national_number_is_sent_as_e164_with_from_body_and_status_callback(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    send(settings(twilio, status_callback_url=CALLBACK), tmp_path, message(TO_NATIONAL, "Hi!"))

    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request.authorized
    assert request.form == {"To": TO, "From": FROM, "Body": "Hi!", "StatusCallback": CALLBACK}


def test_the_receipt_carries_twilios_sid_and_the_segment_count(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    receipt = send(settings(twilio), tmp_path, message(text="x" * 200))

    [request] = twilio.requests
    assert re.fullmatch(r"SM[0-9a-f]{32}", receipt.provider_message_id)
    assert receipt.provider_message_id == request.sid
    assert receipt.segments == 2
    assert receipt.details == {"to": TO, "encoding": "GSM-7"}


def test_a_messaging_service_sid_replaces_from(twilio: TwilioFake, tmp_path: Path) -> None:
    service = "MG" + "0" * 32

    send(settings(twilio, messaging_service_sid=service), tmp_path, message(text="Hi!"))

    [request] = twilio.requests
    assert request.form == {"To": TO, "MessagingServiceSid": service, "Body": "Hi!"}


def test_one_client_serves_concurrent_sends(twilio: TwilioFake, tmp_path: Path) -> None:
    channel = SmsChannel(settings(twilio), tmp_path / "outbox")
    recipients = [f"+1415555{n:04d}" for n in range(2671, 2681)]

    receipts = asyncio.run(send_with(channel, *(message(to) for to in recipients)))

    assert all(isinstance(r, Receipt) for r in receipts)
    assert sorted(r.form["To"] for r in twilio.wait_for_requests(10)) == recipients


@pytest.mark.parametrize("number", ["12345", "not a phone number", "+44 7700 900123"])
def test_an_invalid_number_is_permanent_and_nothing_reaches_twilio(
    twilio: TwilioFake, tmp_path: Path, number: str
) -> None:
    error = failure(settings(twilio), tmp_path, message(number))

    assert type(error) is PermanentError
    assert repr(number) in str(error)
    assert twilio.requests == []


# -- classification -------------------------------------------------------------


def test_429_is_transient_and_carries_retry_after(twilio: TwilioFake, tmp_path: Path) -> None:
    twilio.queue(Reply(429, 20429, headers={"Retry-After": "7"}))

    error = failure(settings(twilio), tmp_path)

    assert type(error) is TransientError
    assert error.retry_after_s == 7.0
    assert error.provider_code == 20429


def test_503_is_transient_and_carries_retry_after(twilio: TwilioFake, tmp_path: Path) -> None:
    twilio.queue(Reply(503, headers={"Retry-After": "30"}))

    error = failure(settings(twilio), tmp_path)

    assert type(error) is TransientError
    assert error.retry_after_s == 30.0


def test_concurrent_sends_each_get_their_own_retry_after(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    twilio.script(TO, Reply(429, 20429, headers={"Retry-After": "7"}))
    twilio.script("+14155550134", Reply(503, headers={"Retry-After": "30"}))
    channel = SmsChannel(settings(twilio), tmp_path / "outbox")

    first, second = asyncio.run(send_with(channel, message(TO), message("+14155550134")))

    assert isinstance(first, TransientError) and first.retry_after_s == 7.0
    assert isinstance(second, TransientError) and second.retry_after_s == 30.0


def test_a_500_means_the_outcome_is_unknown(twilio: TwilioFake, tmp_path: Path) -> None:
    twilio.queue(Reply(500, 20500))

    error = failure(settings(twilio), tmp_path)

    assert type(error) is OutcomeUnknown
    assert error.provider_code == 20500


@pytest.mark.parametrize("code", [21211, 21608, 21614])
def test_a_rejected_recipient_is_permanent(twilio: TwilioFake, tmp_path: Path, code: int) -> None:
    twilio.script(TO, Reply(400, code))

    error = failure(settings(twilio), tmp_path)

    assert isinstance(error, PermanentError)
    assert error.provider_code == code
    assert not error.opt_out


def test_a_recipient_who_replied_stop_is_permanent_and_opted_out(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    twilio.script(TO, Reply(400, 21610))

    error = failure(settings(twilio), tmp_path)

    assert isinstance(error, PermanentError)
    assert error.provider_code == 21610
    assert error.opt_out


def test_a_wrong_auth_token_is_permanent(twilio: TwilioFake, tmp_path: Path) -> None:
    error = failure(settings(twilio, auth_token="not-the-token"), tmp_path)

    assert isinstance(error, PermanentError)
    assert error.provider_code == 20003
    [request] = twilio.requests
    assert not request.authorized


def test_a_refused_connection_is_transient(tmp_path: Path) -> None:
    # A bound socket that does not listen: connecting to it is refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        api_base = f"http://127.0.0.1:{closed.getsockname()[1]}"
        config = SmsSettings.model_validate(
            {"account_sid": "AC" + "1" * 32, "auth_token": "t", "from_number": FROM}
            | {"api_base": api_base}
        )

        error = failure(config, tmp_path)

    assert type(error) is TransientError


def test_a_timeout_after_the_request_was_sent_means_the_outcome_is_unknown(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    twilio.queue(Reply(hang=True))

    error = failure(settings(twilio, timeout_s=0.5), tmp_path)

    assert type(error) is OutcomeUnknown
    [request] = twilio.wait_for_requests(1)
    assert request.form["To"] == TO


def test_retry_after_may_be_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


# -- segments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("€" * 80, "GSM-7", 160, 1),
        ("[]{}^~\\|" * 10 + "a", "GSM-7", 161, 2),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        ("Grüße aus Köln", "GSM-7", 14, 1),
        ("ça va", "UCS-2", 5, 1),  # GSM-7 has Ç but not ç
    ],
)
def test_count_segments(text: str, encoding: str, units: int, segments: int) -> None:
    counted = count_segments(text)

    assert (counted.encoding, counted.units, counted.segments) == (encoding, units, segments)


def test_a_two_septet_character_is_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets would fill two parts, but € cannot straddle them.
    assert count_segments("a" * 152 + "€" + "a" * 152).segments == 3


def test_above_max_segments_refuse_is_permanent_and_nothing_is_sent(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    config = settings(twilio, max_segments=1, over_limit="refuse")

    error = failure(config, tmp_path, message(text="a" * 161))

    assert type(error) is PermanentError
    assert twilio.requests == []


def test_above_max_segments_truncate_sends_gsm_text_ending_in_three_dots(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    config = settings(twilio, max_segments=1, over_limit="truncate")

    receipt = send(config, tmp_path, message(text="a" * 200))

    [request] = twilio.requests
    assert request.form["Body"] == "a" * 157 + "..."
    assert receipt.segments == 1
    assert receipt.details["truncated"] == "true"


def test_above_max_segments_truncate_sends_ucs2_text_ending_in_an_ellipsis(
    twilio: TwilioFake, tmp_path: Path
) -> None:
    config = settings(twilio, max_segments=2, over_limit="truncate")

    send(config, tmp_path, message(text="ж" * 200))

    [request] = twilio.requests
    assert request.form["Body"] == "ж" * 133 + "…"


def test_truncating_away_the_only_unicode_character_leaves_gsm_text() -> None:
    assert truncate_to_segments("a" * 200 + "ж", 1) == "a" * 157 + "..."


# -- outbox and settings ------------------------------------------------------------


def test_without_an_account_sid_messages_are_written_to_the_outbox(tmp_path: Path) -> None:
    sent = message(text="Hi €!")

    receipt = send(SmsSettings(from_number=FROM), tmp_path, sent)

    [path] = (tmp_path / "outbox").glob("*.txt")
    assert path.read_text(encoding="utf-8") == (
        f"To: {TO}\nFrom: {FROM}\nSegments: 1\nEncoding: GSM-7\n\nHi €!"
    )
    assert receipt.provider_message_id == f"outbox-{sent.notification_id}"
    assert receipt.segments == 1
    assert receipt.details["outbox"] == str(path)


def test_an_account_sid_without_an_auth_token_fails_at_start_up(tmp_path: Path) -> None:
    config = SmsSettings(account_sid="AC" + "1" * 32, from_number=FROM)

    with pytest.raises(ConfigError, match="auth_token"):
        SmsChannel(config, tmp_path / "outbox")
