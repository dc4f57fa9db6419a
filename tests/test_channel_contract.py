"""Spec: every registered channel keeps one contract, each against its real local peer.

A channel makes one attempt and classifies the outcome (README, "Channels"):

==========================  ============================================  ======================
row                         given the peer ...                            the attempt ends in
==========================  ============================================  ======================
outbox                      (none: default settings, not configured)      a Receipt naming the
                                                                          one outbox file
accepted                    accepts (HTTP 2xx, Twilio 201, SMTP 250)      a Receipt with the
                                                                          provider message id
rate-limited                answers 429 with ``Retry-After: 7``           TransientError,
                                                                          retry_after_s == 7
rejected                    refuses the message (HTTP/Twilio 400,         PermanentError
                            SMTP 550)
unavailable                 asks to come back later (HTTP/Twilio 503,     TransientError
                            SMTP 451)
connection-refused          does not listen                               TransientError
timeout-after-sent          takes the request and never answers           per channel: see its
                                                                          adapter
==========================  ============================================  ======================

Each channel has an adapter below that builds it against its peer (the SMTP
sink, the Twilio fake, the HTTP receiver) and scripts the peer's answers; the
adapter declares the rows its channel has, and the tables are built from those
declarations. A row a channel cannot have is left out of its table, not
skipped: SMTP has no 429 and no "request sent, no answer" case this sink can
provoke; Apprise reports one bool per send, so it has no Retry-After, cannot
tell a rejection from an outage, and its timeout is one more ``False``.
A channel registered in :data:`hub.channels.CHANNELS` without an adapter
fails :func:`test_every_registered_channel_has_an_adapter`.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from hub.channels import CHANNELS, import_channel
from hub.channels.apprise import AppriseChannel, AppriseSettings
from hub.channels.base import Channel, Message, Receipt
from hub.channels.email import EmailChannel, EmailSettings
from hub.channels.slack import SlackChannel, SlackSettings
from hub.channels.sms import SmsChannel, SmsSettings
from hub.channels.webhook import WebhookChannel, WebhookSettings
from hub.errors import ChannelError, OutcomeUnknown, PermanentError, TransientError
from tests.http_receiver import HttpReceiver, Response
from tests.smtp_sink import SmtpSink, start_sink
from tests.twilio_fake import Reply, TwilioFake, start_fake

pytestmark = pytest.mark.timeout(30)

# The contract's rows, as declared by the adapters.
OUTBOX = "outbox"
ACCEPTED = "accepted"
RATE_LIMITED = "rate-limited"
REJECTED = "rejected"
UNAVAILABLE = "unavailable"
REFUSED = "connection-refused"
TIMEOUT_AFTER_SENT = "timeout-after-sent"

RETRY_AFTER_S = 7.0
# Generous where a timeout is not the point, so a loaded machine cannot turn
# an answer into a timeout; short where it is.
PATIENT_TIMEOUT_S = 10.0
QUICK_TIMEOUT_S = 1.0


class Adapter(ABC):
    """How to run one channel against its local peer and make the peer answer each way.

    ``rows`` are the contract rows the channel has; ``after_timeout`` is what
    a timeout after the request went out must become, for channels that have
    that row.
    """

    channel_class: ClassVar[type[Channel[Any]]]
    rows: ClassVar[frozenset[str]]
    after_timeout: ClassVar[type[ChannelError] | None] = None
    recipient: ClassVar[str] = "ops"

    @property
    def name(self) -> str:
        return self.channel_class.name

    @abstractmethod
    def peer(self) -> Any:
        """A context manager: the started peer, stopped on exit."""

    @abstractmethod
    def port(self, peer: Any) -> int:
        """The peer's TCP port on 127.0.0.1."""

    @abstractmethod
    def channel(self, port: int, outbox: Path, timeout_s: float) -> Channel[Any]:
        """The channel configured to reach a peer on 127.0.0.1:``port``."""

    @abstractmethod
    def arrange(self, peer: Any, row: str) -> Message:
        """Script ``peer`` to answer as ``row`` says; the message to send."""

    @abstractmethod
    def attempts(self, peer: Any) -> int:
        """Attempts the peer has seen, once it has seen at least one (waits, no sleeps)."""

    def message(self, recipient: str | None = None) -> Message:
        return Message(
            notification_id=f"ntf_{uuid.uuid4().hex[:16]}",
            event_id="evt_1",
            event_type="task.failed",
            recipient=recipient or self.recipient,
            subject="Nightly backup failed",
            text="Backup of db-1 failed after 3 attempts.\n",
            data={"severity": "error", "task": "nightly-backup"},
        )


class EmailAdapter(Adapter):
    """SMTP sink (aiosmtpd); the recipient's local part picks the reply (tests/smtp_sink.py)."""

    channel_class = EmailChannel
    # SMTP has no 429; a 4xx reply is "unavailable" (transient), a 5xx "rejected".
    rows = frozenset({OUTBOX, ACCEPTED, REJECTED, UNAVAILABLE, REFUSED})
    recipient = "ops@example.com"

    @contextmanager
    def peer(self) -> Iterator[SmtpSink]:
        controller, sink = start_sink()
        sink.port = controller.port  # type: ignore[attr-defined]
        try:
            yield sink
        finally:
            controller.stop()

    def port(self, peer: SmtpSink) -> int:
        return int(peer.port)  # type: ignore[attr-defined]

    def channel(self, port: int, outbox: Path, timeout_s: float) -> EmailChannel:
        settings = EmailSettings(host="127.0.0.1", port=port, timeout_s=timeout_s)
        return EmailChannel(settings, outbox)

    def arrange(self, peer: SmtpSink, row: str) -> Message:
        local_part = {ACCEPTED: "ops", REJECTED: "reject-ops", UNAVAILABLE: "busy1-ops"}[row]
        return self.message(f"{local_part}-{uuid.uuid4().hex[:8]}@example.com")

    def attempts(self, peer: SmtpSink) -> int:
        peer.wait_for(lambda sink: sum(sink.tries.values()) >= 1, timeout_s=10)
        return sum(peer.tries.values())  # RCPT commands: one per message


class SmsAdapter(Adapter):
    """The Twilio fake, driven by the real twilio client (tests/twilio_fake.py)."""

    channel_class = SmsChannel
    rows = frozenset(
        {OUTBOX, ACCEPTED, RATE_LIMITED, REJECTED, UNAVAILABLE, REFUSED, TIMEOUT_AFTER_SENT}
    )
    # Twilio may have queued the message: resending risks a duplicate SMS.
    after_timeout = OutcomeUnknown
    recipient = "+14155552671"
    account_sid = "AC" + "1" * 32
    auth_token = "contract-test-token"

    @contextmanager
    def peer(self) -> Iterator[TwilioFake]:
        fake = start_fake(self.account_sid, self.auth_token)
        try:
            yield fake
        finally:
            fake.stop()

    def port(self, peer: TwilioFake) -> int:
        return int(peer.base_url.rsplit(":", 1)[1])

    def channel(self, port: int, outbox: Path, timeout_s: float) -> SmsChannel:
        settings = SmsSettings(
            account_sid=self.account_sid,
            auth_token=SecretStr(self.auth_token),
            from_number="+15005550006",
            api_base=f"http://127.0.0.1:{port}",
            timeout_s=timeout_s,
        )
        return SmsChannel(settings, outbox)

    def arrange(self, peer: TwilioFake, row: str) -> Message:
        peer.queue(
            {
                ACCEPTED: Reply(201),
                RATE_LIMITED: Reply(429, 20429, headers={"Retry-After": f"{RETRY_AFTER_S:g}"}),
                REJECTED: Reply(400, 21211),
                UNAVAILABLE: Reply(503, 20503),
                TIMEOUT_AFTER_SENT: Reply(hang=True),
            }[row]
        )
        return self.message()

    def attempts(self, peer: TwilioFake) -> int:
        return len(peer.wait_for_requests(1))


class HttpAdapter(Adapter):
    """Channels whose peer is the scripted HTTP receiver (tests/http_receiver.py)."""

    path: ClassVar[str]

    @contextmanager
    def peer(self) -> Iterator[HttpReceiver]:
        with HttpReceiver() as receiver:
            yield receiver

    def port(self, peer: HttpReceiver) -> int:
        return peer.port

    def arrange(self, peer: HttpReceiver, row: str) -> Message:
        peer.script(
            {
                ACCEPTED: Response(200),
                RATE_LIMITED: Response(
                    429, {"Retry-After": f"{RETRY_AFTER_S:g}"}, body="rate_limited"
                ),
                REJECTED: Response(400, body="invalid_payload"),
                UNAVAILABLE: Response(503, body="service_unavailable"),
                # Held until the receiver stops, far beyond the client's timeout.
                TIMEOUT_AFTER_SENT: Response(stall_s=60),
            }[row]
        )
        return self.message()

    def attempts(self, peer: HttpReceiver) -> int:
        return len(peer.wait_for(1))


class SlackAdapter(HttpAdapter):
    channel_class = SlackChannel
    rows = frozenset(
        {OUTBOX, ACCEPTED, RATE_LIMITED, REJECTED, UNAVAILABLE, REFUSED, TIMEOUT_AFTER_SENT}
    )
    # An alert lost costs more than a rare duplicate (hub/channels/http.py).
    after_timeout = TransientError
    path = "/services/T0/B0/x"

    def channel(self, port: int, outbox: Path, timeout_s: float) -> SlackChannel:
        url = SecretStr(f"http://127.0.0.1:{port}{self.path}")
        return SlackChannel(SlackSettings(webhook_url=url, timeout_s=timeout_s), outbox)


class WebhookAdapter(HttpAdapter):
    channel_class = WebhookChannel
    rows = frozenset(
        {OUTBOX, ACCEPTED, RATE_LIMITED, REJECTED, UNAVAILABLE, REFUSED, TIMEOUT_AFTER_SENT}
    )
    # Receivers drop a resend by its X-Hub-Delivery id (hub/channels/http.py).
    after_timeout = TransientError
    path = "/hooks/hub"

    def channel(self, port: int, outbox: Path, timeout_s: float) -> WebhookChannel:
        settings = WebhookSettings(
            url=f"http://127.0.0.1:{port}{self.path}",
            secret=SecretStr("whsec_contract"),
            timeout_s=timeout_s,
        )
        return WebhookChannel(settings, outbox)


class AppriseAdapter(HttpAdapter):
    """Apprise's ``json://`` service posting to the HTTP receiver."""

    channel_class = AppriseChannel
    # One bool per send: no Retry-After, a rejection looks like an outage.
    rows = frozenset({OUTBOX, ACCEPTED, UNAVAILABLE, REFUSED})
    path = "/apprise/hook"

    def channel(self, port: int, outbox: Path, timeout_s: float) -> AppriseChannel:
        url = SecretStr(f"json://127.0.0.1:{port}{self.path}")
        return AppriseChannel(AppriseSettings(urls=[url], timeout_s=timeout_s), outbox)


ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        EmailAdapter(),
        SmsAdapter(),
        SlackAdapter(),
        WebhookAdapter(),
        AppriseAdapter(),
    )
}


def having(row: str) -> list[Any]:
    """The adapters whose channel has ``row``: one pytest.param each, named by channel."""
    return [
        pytest.param(adapter, id=adapter.name)
        for adapter in ADAPTERS.values()
        if row in adapter.rows
    ]


def timeout_rows() -> list[Any]:
    """(adapter, the error its timeout after sending must be), for channels with that row."""
    return [
        pytest.param(adapter, expected, id=f"{adapter.name}-{expected.__name__}")
        for adapter in ADAPTERS.values()
        if TIMEOUT_AFTER_SENT in adapter.rows and (expected := adapter.after_timeout)
    ]


@pytest.fixture
def peer(adapter: Adapter) -> Iterator[Any]:
    """The adapter's local peer, started for one test."""
    with adapter.peer() as running:
        yield running


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, and nobody else takes it."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


async def _send_once(channel: Channel[Any], message: Message) -> Receipt:
    """What a worker does: start the channel, make one attempt, close it."""
    await channel.start()
    try:
        return await channel.send(message)
    finally:
        await channel.close()


def send(channel: Channel[Any], message: Message) -> Receipt:
    return asyncio.run(_send_once(channel, message))


def failure(channel: Channel[Any], message: Message) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        send(channel, message)
    return caught.value


# -- the registry ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_registered_channel_has_an_adapter(name: str) -> None:
    assert name in ADAPTERS, f"channel {name!r} is registered but has no contract adapter"
    assert ADAPTERS[name].channel_class is import_channel(CHANNELS[name])


def test_every_adapter_is_a_registered_channel() -> None:
    assert set(ADAPTERS) <= set(CHANNELS)


def test_every_adapter_declares_the_timeout_outcome_iff_it_has_that_row() -> None:
    for adapter in ADAPTERS.values():
        has_row = TIMEOUT_AFTER_SENT in adapter.rows
        assert has_row == (adapter.after_timeout is not None), adapter.name


# -- the contract ---------------------------------------------------------------------


@pytest.mark.parametrize("adapter", having(OUTBOX))
def test_unconfigured_writes_one_outbox_file_and_the_receipt_names_it(
    adapter: Adapter, tmp_path: Path
) -> None:
    # Given the channel with its default settings
    outbox = tmp_path / "outbox"
    channel = adapter.channel_class(adapter.channel_class.settings_model(), outbox)
    assert not channel.configured

    # When it sends
    receipt = send(channel, adapter.message())

    # Then exactly one file stands for the message, and the receipt names it
    [written] = [path for path in outbox.rglob("*") if path.is_file()]
    assert receipt.details["outbox"] == str(written)
    assert written.read_bytes()


@pytest.mark.parametrize("adapter", having(ACCEPTED))
def test_an_accepted_message_gives_a_receipt_with_a_provider_message_id(
    adapter: Adapter, peer: Any, tmp_path: Path
) -> None:
    message = adapter.arrange(peer, ACCEPTED)

    receipt = send(adapter.channel(adapter.port(peer), tmp_path, PATIENT_TIMEOUT_S), message)

    assert isinstance(receipt, Receipt)
    assert receipt.provider_message_id
    assert "outbox" not in receipt.details
    assert adapter.attempts(peer) == 1


@pytest.mark.parametrize("adapter", having(RATE_LIMITED))
def test_429_is_transient_and_carries_retry_after(
    adapter: Adapter, peer: Any, tmp_path: Path
) -> None:
    message = adapter.arrange(peer, RATE_LIMITED)

    error = failure(adapter.channel(adapter.port(peer), tmp_path, PATIENT_TIMEOUT_S), message)

    assert type(error) is TransientError
    assert error.retry_after_s == RETRY_AFTER_S
    assert error.channel == adapter.name
    assert adapter.attempts(peer) == 1


@pytest.mark.parametrize("adapter", having(REJECTED))
def test_a_rejection_is_permanent(adapter: Adapter, peer: Any, tmp_path: Path) -> None:
    # HTTP and Twilio: a 4xx other than 408/429; SMTP: a 5xx reply.
    message = adapter.arrange(peer, REJECTED)

    error = failure(adapter.channel(adapter.port(peer), tmp_path, PATIENT_TIMEOUT_S), message)

    assert type(error) is PermanentError
    assert error.channel == adapter.name
    assert adapter.attempts(peer) == 1


@pytest.mark.parametrize("adapter", having(UNAVAILABLE))
def test_a_provider_asking_to_come_back_later_is_transient(
    adapter: Adapter, peer: Any, tmp_path: Path
) -> None:
    # HTTP and Twilio: 503; SMTP: a 4xx reply.
    message = adapter.arrange(peer, UNAVAILABLE)

    error = failure(adapter.channel(adapter.port(peer), tmp_path, PATIENT_TIMEOUT_S), message)

    assert type(error) is TransientError
    assert error.channel == adapter.name
    assert adapter.attempts(peer) == 1


@pytest.mark.parametrize("adapter", having(REFUSED))
def test_a_refused_connection_is_transient(
    adapter: Adapter, refusing_port: int, tmp_path: Path
) -> None:
    channel = adapter.channel(refusing_port, tmp_path, PATIENT_TIMEOUT_S)

    error = failure(channel, adapter.message())

    assert type(error) is TransientError
    assert error.channel == adapter.name


@pytest.mark.parametrize(("adapter", "expected"), timeout_rows())
def test_a_timeout_after_the_request_went_out(
    adapter: Adapter, expected: type[ChannelError], peer: Any, tmp_path: Path
) -> None:
    # Given a peer that takes the request and never answers
    message = adapter.arrange(peer, TIMEOUT_AFTER_SENT)

    # When the channel's own timeout runs out
    error = failure(adapter.channel(adapter.port(peer), tmp_path, QUICK_TIMEOUT_S), message)

    # Then the request did reach the peer, and the outcome is classified as declared
    assert adapter.attempts(peer) == 1
    assert type(error) is expected
    assert error.channel == adapter.name
