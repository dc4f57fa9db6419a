"""Spec: the alert channels (Slack, webhook, Apprise) over real HTTP to a local receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from hub import __version__
from hub.channels.apprise import AppriseChannel, AppriseSettings
from hub.channels.base import Channel, Message, Receipt
from hub.channels.slack import SlackChannel, SlackSettings
from hub.channels.webhook import WebhookChannel, WebhookSettings
from hub.embedded import _free_port
from hub.errors import ConfigError, PermanentError, TransientError
from hub.webhooks import verify
from tests.http_receiver import HttpReceiver, Response

pytestmark = pytest.mark.timeout(30)

SECRET = "whsec_test"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as running:
        yield running


def alert(**data: Any) -> Message:
    return Message(
        notification_id="ntf_1",
        event_id="evt_42",
        event_type="task.failed",
        recipient="ops",
        subject="Nightly backup failed",
        text="Backup of db-1 failed after 3 attempts.\n",
        data=data,
    )


async def send_once(channel: Channel, message: Message) -> Receipt:
    """What a worker does: start the channel, make one attempt, close it."""
    await channel.start()
    try:
        return await channel.send(message)
    finally:
        await channel.close()


def slack(receiver: HttpReceiver, tmp_path: Path) -> SlackChannel:
    settings = SlackSettings(webhook_url=SecretStr(receiver.url("/services/T0/B0/x")), timeout_s=5)
    return SlackChannel(settings, tmp_path / "outbox")


def webhook(receiver: HttpReceiver, tmp_path: Path, secret: str = SECRET) -> WebhookChannel:
    settings = WebhookSettings(
        url=receiver.url("/hooks/hub"), secret=SecretStr(secret), timeout_s=5
    )
    return WebhookChannel(settings, tmp_path / "outbox")


def apprise(url: str, tmp_path: Path) -> AppriseChannel:
    settings = AppriseSettings(urls=[SecretStr(url)], timeout_s=5)
    return AppriseChannel(settings, tmp_path / "outbox")


# Slack


def test_slack_posts_a_coloured_attachment_with_title_body_fields_context_and_link(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    message = alert(
        task="nightly-backup",
        severity="critical",
        attempts=3,
        traceback="Traceback (most recent call last):\n  File ...\nOSError: disk full",
        url="https://ci.example.com/runs/42",
    )

    receipt = asyncio.run(send_once(slack(receiver, tmp_path), message))

    [request] = receiver.wait_for(1)
    assert request.path == "/services/T0/B0/x"
    assert request.headers["Content-Type"].startswith("application/json")
    assert json.loads(request.body) == {
        "text": "[critical] Nightly backup failed",
        "attachments": [
            {
                "color": "#A30200",
                "fallback": "[critical] Nightly backup failed",
                "blocks": [
                    {
                        "type": "header",
                        "text": {"type": "plain_text", "text": "Nightly backup failed"},
                    },
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": "Backup of db-1 failed after 3 attempts.",
                        },
                    },
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": "*task*\nnightly-backup"},
                            {"type": "mrkdwn", "text": "*severity*\ncritical"},
                            {"type": "mrkdwn", "text": "*attempts*\n3"},
                        ],
                    },
                    {
                        "type": "context",
                        "elements": [{"type": "mrkdwn", "text": "`task.failed` · evt_42"}],
                    },
                    {
                        "type": "actions",
                        "elements": [
                            {
                                "type": "button",
                                "text": {"type": "plain_text", "text": "Open"},
                                "url": "https://ci.example.com/runs/42",
                            }
                        ],
                    },
                ],
            }
        ],
    }
    assert receipt.provider_message_id == "slack-ntf_1"


def test_slack_without_a_subject_titles_with_the_event_type_and_escapes_mrkdwn(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    message = Message("ntf_2", "evt_7", "disk.low", "ops", text="free < 5% & falling\n")

    asyncio.run(send_once(slack(receiver, tmp_path), message))

    [request] = receiver.wait_for(1)
    attachment = json.loads(request.body)["attachments"][0]
    header, section = attachment["blocks"][:2]
    assert header["text"]["text"] == "disk.low"
    assert section["text"]["text"] == "free &lt; 5% &amp; falling"
    assert attachment["color"] == "#E01E5A"  # severity defaults to error


def test_slack_shows_at_most_ten_fields(receiver: HttpReceiver, tmp_path: Path) -> None:
    message = alert(**{f"key{n:02}": n for n in range(15)})

    asyncio.run(send_once(slack(receiver, tmp_path), message))

    [request] = receiver.wait_for(1)
    [fields] = [b for b in json.loads(request.body)["attachments"][0]["blocks"] if "fields" in b]
    assert [f["text"].split("\n")[0] for f in fields["fields"]] == [
        f"*key{n:02}*" for n in range(10)
    ]


def test_slack_reuses_one_connection_across_sends(receiver: HttpReceiver, tmp_path: Path) -> None:
    channel = slack(receiver, tmp_path)

    async def scenario() -> None:
        await channel.start()
        try:
            for _ in range(3):
                await channel.send(alert())
        finally:
            await channel.close()

    asyncio.run(scenario())

    assert len(receiver.wait_for(3)) == 3
    assert receiver.connections == 1


def test_slack_429_is_transient_with_the_retry_after_seconds(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    receiver.script(Response(429, {"Retry-After": "7"}, "rate_limited"))

    with pytest.raises(TransientError) as error:
        asyncio.run(send_once(slack(receiver, tmp_path), alert()))

    assert error.value.retry_after_s == 7
    assert error.value.provider_code == 429


def test_a_retry_after_http_date_becomes_seconds_from_now(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    receiver.script(Response(429, {"Retry-After": later}, "rate_limited"))

    with pytest.raises(TransientError) as error:
        asyncio.run(send_once(slack(receiver, tmp_path), alert()))

    assert error.value.retry_after_s is not None
    assert 25 <= error.value.retry_after_s <= 30


def test_slack_500_is_transient(receiver: HttpReceiver, tmp_path: Path) -> None:
    receiver.script(Response(500, body="internal_error"))

    with pytest.raises(TransientError) as error:
        asyncio.run(send_once(slack(receiver, tmp_path), alert()))

    assert error.value.provider_code == 500
    assert error.value.retry_after_s is None


@pytest.mark.parametrize(("status", "said"), [(404, "no_service"), (400, "invalid_payload")])
def test_slack_rejections_are_permanent_and_keep_slacks_reason(
    receiver: HttpReceiver, tmp_path: Path, status: int, said: str
) -> None:
    receiver.script(Response(status, body=said))

    with pytest.raises(PermanentError) as error:
        asyncio.run(send_once(slack(receiver, tmp_path), alert()))

    assert error.value.provider_code == status
    assert said in str(error.value)
    assert len(receiver.wait_for(1)) == 1


def test_slack_unreachable_is_transient(tmp_path: Path) -> None:
    url = SecretStr(f"http://127.0.0.1:{_free_port()}/services/x")
    channel = SlackChannel(SlackSettings(webhook_url=url, timeout_s=2), tmp_path / "outbox")

    with pytest.raises(TransientError):
        asyncio.run(send_once(channel, alert()))


def test_slack_without_a_webhook_url_writes_the_payload_to_the_outbox(tmp_path: Path) -> None:
    channel = SlackChannel(SlackSettings(), tmp_path / "outbox")

    receipt = asyncio.run(send_once(channel, alert(severity="warning")))

    [path] = (tmp_path / "outbox").glob("*.json")
    assert receipt.details["outbox"] == str(path)
    assert json.loads(path.read_bytes())["attachments"][0]["color"] == "#DAA038"


# Webhook


def test_webhook_posts_the_documented_json_bytes_signed_with_the_secret(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    message = alert(task="nightly-backup", attempts=3, note="café")

    receipt = asyncio.run(send_once(webhook(receiver, tmp_path), message))

    [request] = receiver.wait_for(1)
    assert request.method == "POST"
    assert (
        request.body
        == (
            '{"data":{"attempts":3,"note":"café","task":"nightly-backup"},"event":"task.failed",'
            '"id":"evt_42","notification_id":"ntf_1","subject":"Nightly backup failed",'
            '"text":"Backup of db-1 failed after 3 attempts.\\n"}'
        ).encode()
    )
    verify(SECRET, request.body, request.headers["X-Hub-Signature"])
    assert request.headers["X-Hub-Delivery"] == "ntf_1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"hub/{__version__}"
    assert receipt.provider_message_id == "ntf_1"


def test_webhook_without_a_secret_sends_no_signature(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    asyncio.run(send_once(webhook(receiver, tmp_path, secret=""), alert()))

    [request] = receiver.wait_for(1)
    assert "X-Hub-Signature" not in request.headers
    assert request.headers["X-Hub-Delivery"] == "ntf_1"


def test_webhook_receipt_uses_the_id_the_receiver_returns(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    receiver.script(Response(202, {"Content-Type": "application/json"}, '{"id": "rcv-9"}'))

    receipt = asyncio.run(send_once(webhook(receiver, tmp_path), alert()))

    assert receipt.provider_message_id == "rcv-9"
    assert receipt.details["delivery"] == "ntf_1"


def test_webhook_408_is_transient(receiver: HttpReceiver, tmp_path: Path) -> None:
    receiver.script(Response(408))

    with pytest.raises(TransientError) as error:
        asyncio.run(send_once(webhook(receiver, tmp_path), alert()))

    assert error.value.provider_code == 408


def test_webhook_410_is_permanent(receiver: HttpReceiver, tmp_path: Path) -> None:
    receiver.script(Response(410, body="gone"))

    with pytest.raises(PermanentError) as error:
        asyncio.run(send_once(webhook(receiver, tmp_path), alert()))

    assert error.value.provider_code == 410


def test_webhook_redirect_is_permanent_and_not_followed(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    receiver.script(Response(301, {"Location": receiver.url("/elsewhere")}))

    with pytest.raises(PermanentError) as error:
        asyncio.run(send_once(webhook(receiver, tmp_path), alert()))

    assert error.value.provider_code == 301
    assert [r.path for r in receiver.requests] == ["/hooks/hub"]


def test_webhook_receiver_too_slow_to_answer_is_transient(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    # The request went out; the receiver dedupes a resend by X-Hub-Delivery.
    receiver.script(Response(stall_s=10))
    settings = WebhookSettings(url=receiver.url("/hooks/hub"), timeout_s=0.3)

    with pytest.raises(TransientError):
        asyncio.run(send_once(WebhookChannel(settings, tmp_path / "outbox"), alert()))

    assert len(receiver.wait_for(1)) == 1


def test_webhook_url_that_is_not_http_stops_start_up(tmp_path: Path) -> None:
    channel = WebhookChannel(WebhookSettings(url="ftp://example.com/x"), tmp_path / "outbox")

    with pytest.raises(ConfigError, match="channels.webhook.url"):
        asyncio.run(channel.start())


def test_webhook_without_a_url_writes_headers_and_body_to_the_outbox(tmp_path: Path) -> None:
    channel = WebhookChannel(WebhookSettings(secret=SecretStr(SECRET)), tmp_path / "outbox")

    asyncio.run(send_once(channel, alert()))

    [path] = (tmp_path / "outbox").glob("*.http")
    head, _, body = path.read_bytes().partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
    assert json.loads(body)["notification_id"] == "ntf_1"
    assert headers["X-Hub-Delivery"] == "ntf_1"
    verify(SECRET, body, headers["X-Hub-Signature"])


# Apprise


def test_apprise_json_url_posts_the_title_and_body(receiver: HttpReceiver, tmp_path: Path) -> None:
    url = f"json://127.0.0.1:{receiver.port}/apprise/hook"

    receipt = asyncio.run(send_once(apprise(url, tmp_path), alert(severity="critical")))

    [request] = receiver.wait_for(1)
    assert request.path == "/apprise/hook"
    posted = json.loads(request.body)
    assert posted["title"] == "Nightly backup failed"
    assert posted["message"] == "Backup of db-1 failed after 3 attempts."  # Apprise strips
    assert posted["type"] == "failure"
    assert receipt.provider_message_id == "apprise-ntf_1"


def test_apprise_target_failing_is_transient_after_exactly_one_attempt(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    receiver.script(Response(500, body="boom"))
    url = f"json://127.0.0.1:{receiver.port}/apprise/hook?retry=2"

    with pytest.raises(TransientError) as error:
        asyncio.run(send_once(apprise(url, tmp_path), alert()))

    assert str(error.value) == "apprise: one or more targets failed"
    assert len(receiver.requests) == 1  # the URL's ?retry=2 is overridden: Celery retries


def test_apprise_url_it_cannot_parse_stops_start_up(tmp_path: Path) -> None:
    channel = apprise("nosuchservice://token@host", tmp_path)

    with pytest.raises(ConfigError, match=r"channels\.apprise\.urls\[0\]") as error:
        asyncio.run(channel.start())

    assert "token" not in str(error.value)


def test_apprise_without_urls_writes_the_message_to_the_outbox(tmp_path: Path) -> None:
    channel = AppriseChannel(AppriseSettings(), tmp_path / "outbox")

    receipt = asyncio.run(send_once(channel, alert(severity="warning")))

    [path] = (tmp_path / "outbox").glob("*.json")
    assert receipt.details["outbox"] == str(path)
    assert json.loads(path.read_bytes()) == {
        "title": "Nightly backup failed",
        "body": "Backup of db-1 failed after 3 attempts.\n",
        "notify_type": "warning",
    }
