"""Spec: logs carry no recipient or secret by default.

Email addresses, E.164 numbers, hub API keys and the secret values of the
settings are masked in every log line; ids, times and ordinary words are not.
(Files under var/ being private is checked where `hub up` creates them, in
tests/test_hub_up.py.)
"""

from __future__ import annotations

import logging
import uuid

import pytest
from celery import Celery
from pydantic import SecretStr

from hub import logs
from hub.channels.sms import SmsSettings
from tests.conftest import Stack, wait_until


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            "550 <ada.lovelace@example.com>: no such user",
            "550 <a***@example.com>: no such user",
        ),
        ("sms to +14155550123 failed", "sms to +*********23 failed"),
        ("key hub_abcdefghijklmnopqrstuvwxyz012345 revoked", "key hub_*** revoked"),
    ],
)
def test_recipients_and_keys_are_masked(line: str, shown: str) -> None:
    assert logs.redact(line) == shown


def test_ids_times_and_words_are_left_alone() -> None:
    line = "event evt_0193ab4c5d6e7f8091a2b3c4 routed at 2026-12-03T14:17:24+00:00 after 3 tries"

    assert logs.redact(line) == line


def test_secret_settings_are_masked_once_configured(caplog: pytest.LogCaptureFixture) -> None:
    settings = SmsSettings(account_sid="AC1", auth_token=SecretStr("tw-secret-token-123"))
    logs.install()
    logs.configure(True, settings)
    try:
        with caplog.at_level(logging.WARNING):
            logging.getLogger("hub.test").warning("auth failed with %s", "tw-secret-token-123")
    finally:
        logs.configure(True, SmsSettings())

    assert caplog.messages == ["auth failed with ***"]


def test_an_address_quoted_in_a_worker_log_line_is_masked(stack: Stack) -> None:
    # Given an event published through the broker whose email is invalid
    # (two dots in a row): the worker logs why it rejected it, quoting the value
    bad = f"a..{uuid.uuid4().hex[:8]}@example.com"
    foreign = Celery("shop", broker=stack.env["HUB_BROKER_URL"])
    data = {"user_id": "1", "name": "Ada", "email": bad}
    foreign.send_task("hub.publish", kwargs={"type": "user.registered", "data": data})
    foreign.close()

    # Then the line is there, with the address masked
    log = stack.home / "worker.log"
    wait_until(
        lambda: "is not a 'email'" in log.read_text() and "a***@example.com" in log.read_text(),
        what="the rejection, masked",
    )
    assert bad not in log.read_text()
