"""The hostile-input suite's own promise: what was accepted before it is delivered once after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user

BEFORE = 20


@pytest.fixture(scope="package", autouse=True)
def accepted_before_the_suite(stack: Stack, smtp: SmtpSink) -> Iterator[None]:
    """Events accepted before any hostile request; each is delivered exactly once after all."""
    recipients = [address("before-hostile") for _ in range(BEFORE)]
    event_ids = [stack.publish("user.registered", user(to)) for to in recipients]
    yield
    for event_id in event_ids:
        [email] = stack.settled(event_id, timeout_s=60)["notifications"]
        assert email["status"] == "sent"
    assert [len(smtp.to(to)) for to in recipients] == [1] * BEFORE
