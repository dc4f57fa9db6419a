"""Spec: with outbound.allow_private_targets off, no target reaches a non-public address.

Webhook, Slack and Apprise targets come only from settings; a target on a
private, loopback or link-local address stops start-up naming its key, and is
refused again at each send (a name may resolve elsewhere later). On by
default, so a laptop and the tests keep working.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from hub.channels.base import Channel
from hub.channels.http import private_address
from hub.channels.slack import SlackChannel, SlackSettings
from hub.channels.webhook import WebhookChannel, WebhookSettings
from hub.errors import ConfigError, PermanentError
from hub.settings import OutboundSettings
from tests.http_receiver import HttpReceiver
from tests.test_alert_channels import alert, apprise, receiver, send_once  # noqa: F401


def refusing(channel: Channel) -> Channel:  # type: ignore[type-arg]
    channel.allow_private_targets = False
    return channel


def test_private_targets_are_allowed_by_default() -> None:
    assert OutboundSettings().allow_private_targets is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]:9/hook",
        "http://192.168.0.10/hook",
    ],
)
def test_a_webhook_on_a_private_address_stops_start_up_naming_its_key(
    url: str, tmp_path: Path
) -> None:
    channel = refusing(WebhookChannel(WebhookSettings(url=url), tmp_path / "outbox"))

    with pytest.raises(ConfigError, match=r"channels\.webhook\.url: .*non-public address"):
        asyncio.run(channel.start())


def test_a_slack_url_on_loopback_is_refused_too(tmp_path: Path) -> None:
    settings = SlackSettings(webhook_url=SecretStr("http://127.0.0.1:9/services/x"))
    channel = refusing(SlackChannel(settings, tmp_path / "outbox"))

    with pytest.raises(ConfigError, match=r"channels\.slack\.webhook_url"):
        asyncio.run(channel.start())


def test_an_apprise_json_target_on_loopback_is_refused(tmp_path: Path) -> None:
    channel = refusing(apprise("json://127.0.0.1:9/hook", tmp_path))

    with pytest.raises(ConfigError, match=r"channels\.apprise\.urls\[0\]"):
        asyncio.run(channel.start())


def test_a_target_that_turns_private_after_start_up_is_refused_at_send(
    receiver: HttpReceiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Given a webhook started while private targets were allowed
    channel = WebhookChannel(WebhookSettings(url=receiver.url("/hook")), tmp_path / "outbox")

    async def start_then_refuse() -> None:
        await channel.start()
        channel.allow_private_targets = False
        try:
            await channel.send(alert())
        finally:
            await channel.close()

    # When a send finds the target private
    with pytest.raises(PermanentError, match="non-public address 127.0.0.1"):
        asyncio.run(start_then_refuse())

    # Then nothing reached it
    assert receiver.requests == []


def test_public_addresses_pass() -> None:
    assert asyncio.run(private_address("93.184.216.34")) is None
    assert asyncio.run(private_address("2606:4700::1111")) is None


def test_with_private_targets_allowed_a_local_receiver_gets_the_alert(
    receiver: HttpReceiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    channel = WebhookChannel(WebhookSettings(url=receiver.url("/hook")), tmp_path / "outbox")

    asyncio.run(send_once(channel, alert()))

    assert len(receiver.wait_for(1)) == 1
