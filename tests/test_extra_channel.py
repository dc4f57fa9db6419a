"""Spec: a channel added in one file plus one registry line works end to end.

The registry line is the ``extra_channels`` setting (installed plugins use the
``hub.channels`` entry-point group); the channel's own settings section,
queue and template parts come from its class, so nothing else in the hub
changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.settings import bundled_path
from tests.conftest import TEST_SETTINGS, Stack, other_redis_db, running_stack, wait_until
from tests.smtp_sink import SmtpSink

RECORDER_SETTINGS = """
extra_channels = ["tests.recording_channel:RecordingChannel"]

[[subscriptions]]
name = "welcome-recorded"
event = "user.registered"
channel = "recorder"
to = "{{ data.email }}"
template = "user.registered"
"""


@pytest.fixture
def recorder(tmp_path: Path, broker_url: str, smtp: SmtpSink) -> Iterator[tuple[Stack, Path]]:
    """A stack whose settings register the recording channel and subscribe it to sign-ups."""
    settings = tmp_path / "recorder-settings.toml"
    extra_keys, subscription = RECORDER_SETTINGS.split("\n\n", 1)
    settings.write_text(
        extra_keys + "\n" + bundled_path("settings.toml").read_text() + TEST_SETTINGS + subscription
    )
    log = tmp_path / "recorded.jsonl"
    env = {"HUB_SETTINGS": str(settings), "HUB_CHANNELS__RECORDER__PATH": str(log)}
    with running_stack(tmp_path, other_redis_db(broker_url), smtp, extra_env=env) as stack:
        yield stack, log


def recorded(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_extra_channel_receives_its_subscriptions_messages_through_the_worker(
    recorder: tuple[Stack, Path],
) -> None:
    stack, log = recorder

    event_id = stack.publish(
        "user.registered", {"user_id": "u1", "email": "ada@example.com", "name": "Ada"}
    )

    event = stack.settled(event_id)
    [line] = wait_until(lambda: recorded(log), what="the recorded message")
    by_channel = {n["channel"]: n for n in event["notifications"]}
    assert by_channel["recorder"]["status"] == "sent"
    assert by_channel["recorder"]["provider_message_id"] == f"rec-{line['id']}"
    assert line["to"] == "ada@example.com"
    assert "Ada" in line["text"]
    # The hub's own channels are untouched.
    assert by_channel["email"]["status"] == "sent"


def test_a_permanent_failure_of_an_extra_channel_fails_the_notification(
    recorder: tuple[Stack, Path],
) -> None:
    stack, _ = recorder

    event_id = stack.publish(
        "user.registered", {"user_id": "u2", "email": "nobody@example.com", "name": "No"}
    )

    event = stack.settled(event_id)
    [failed] = [n for n in event["notifications"] if n["channel"] == "recorder"]
    assert failed["status"] == "failed"
    assert "no such mailbox" in failed["last_error"]
    assert [a["outcome"] for a in failed["attempt_log"]] == ["failed"]
