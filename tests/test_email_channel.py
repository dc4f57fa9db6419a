"""Spec: the email channel against a real SMTP server: pooled connections, classified failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from hub.channels.base import Message
from hub.channels.email import EmailChannel, EmailSettings
from hub.errors import PermanentError, TransientError
from tests.smtp_sink import SmtpSink, _free_port, start_sink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    controller, sink = start_sink()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def channel(sink: SmtpSink, tmp_path: Path, **options: object) -> EmailChannel:
    settings = EmailSettings(host="127.0.0.1", port=sink.port, **options)  # type: ignore[attr-defined, arg-type]
    return EmailChannel(settings, tmp_path / "outbox")


def message(recipient: str | None = None) -> Message:
    return Message(
        notification_id=f"ntf_{uuid.uuid4().hex}",
        event_id="evt_1",
        event_type="user.registered",
        recipient=recipient or f"u-{uuid.uuid4().hex[:8]}@example.com",
        subject="Hello",
        text="plain body\n",
        html="<p>html body</p>\n",
    )


async def send_all(
    email: EmailChannel, messages: list[Message], concurrently: bool = False
) -> None:
    try:
        if concurrently:
            await asyncio.gather(*(email.send(m) for m in messages))
        else:
            for m in messages:
                await email.send(m)
    finally:
        await email.close()


def test_connections_are_pooled_not_opened_per_message(sink: SmtpSink, tmp_path: Path) -> None:
    asyncio.run(send_all(channel(sink, tmp_path, pool_size=2), [message() for _ in range(10)]))

    assert len(sink.messages) == 10
    assert sink.connections == 2


def test_concurrent_sends_share_at_most_pool_size_connections(
    sink: SmtpSink, tmp_path: Path
) -> None:
    email = channel(sink, tmp_path, pool_size=3)

    asyncio.run(send_all(email, [message() for _ in range(30)], concurrently=True))

    assert len(sink.messages) == 30
    assert sink.connections == 3


def test_connections_are_recycled_after_the_configured_count(
    sink: SmtpSink, tmp_path: Path
) -> None:
    email = channel(sink, tmp_path, pool_size=1, recycle_after=3)

    asyncio.run(send_all(email, [message() for _ in range(7)]))

    assert len(sink.messages) == 7
    assert sink.connections == 3


def test_a_multipart_message_has_text_html_and_a_message_id(sink: SmtpSink, tmp_path: Path) -> None:
    sent = message()

    asyncio.run(send_all(channel(sink, tmp_path), [sent]))

    [received] = sink.to(sent.recipient)
    # SMTP carries CRLF line endings.
    assert received.get_body(("plain",)).get_content() == "plain body\r\n"
    assert received.get_body(("html",)).get_content() == "<p>html body</p>\r\n"
    assert sent.notification_id in received["Message-ID"]


def test_5xx_is_permanent_and_the_connection_stays_usable(sink: SmtpSink, tmp_path: Path) -> None:
    email = channel(sink, tmp_path, pool_size=1)
    after = message()

    async def scenario() -> PermanentError:
        with pytest.raises(PermanentError) as error:
            await email.send(message("reject-1@example.com"))
        await send_all(email, [after])
        return error.value

    error = asyncio.run(scenario())

    assert error.provider_code == 550
    assert len(sink.to(after.recipient)) == 1
    assert sink.connections == 1


def test_4xx_is_transient(sink: SmtpSink, tmp_path: Path) -> None:
    async def scenario() -> TransientError:
        email = channel(sink, tmp_path)
        with pytest.raises(TransientError) as error:
            await send_all(email, [message("busy1-x@example.com")])
        return error.value

    assert asyncio.run(scenario()).provider_code == 451


def test_421_drops_the_connection_and_the_next_send_reconnects(
    sink: SmtpSink, tmp_path: Path
) -> None:
    email = channel(sink, tmp_path, pool_size=1)
    recipient = "closing-1@example.com"

    async def scenario() -> None:
        with pytest.raises(TransientError):
            await email.send(message(recipient))
        await send_all(email, [message(recipient)])

    asyncio.run(scenario())

    assert len(sink.to(recipient)) == 1
    assert sink.connections == 2


def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    settings = EmailSettings(host="127.0.0.1", port=_free_port(), timeout_s=2)
    email = EmailChannel(settings, tmp_path / "outbox")

    with pytest.raises(TransientError):
        asyncio.run(send_all(email, [message()]))


def test_without_a_host_messages_are_written_to_the_outbox(tmp_path: Path) -> None:
    email = EmailChannel(EmailSettings(), tmp_path / "outbox")
    sent = message()

    receipt = asyncio.run(email.send(sent))

    [path] = (tmp_path / "outbox").glob("*.eml")
    assert receipt.details["outbox"] == str(path)
    written = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert written["To"] == sent.recipient
    assert written["Message-ID"] == receipt.provider_message_id
    assert written.get_body(("html",)).get_content() == "<p>html body</p>\r\n"  # RFC 5322 CRLF
