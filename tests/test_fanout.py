"""Spec: one event to a topic of 2,000 recipients reaches each of them exactly once.

The fan-out is chunked: routing stores the notifications in one transaction
and spreads them over delivery batches of 50, never one giant message. The
10,000-recipient figure is measured by ``python -m bench.fanout``, not here.
"""

from __future__ import annotations

import uuid

from tests.conftest import Stack, wait_until
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user
from tests.test_subscriptions import subscribed

MEMBERS = 2000
CHUNK = 1000  # the most one recipients or topics request takes


def test_a_topic_of_2000_recipients_gets_one_email_each(stack: Stack, smtp: SmtpSink) -> None:
    run = uuid.uuid4().hex[:12]
    emails = {f"fan-{n}-{run}": address(f"fan{n}") for n in range(MEMBERS)}
    ids = list(emails)
    with stack.client() as http:
        for start in range(0, MEMBERS, CHUNK):
            chunk = [{"id": rid, "email": emails[rid]} for rid in ids[start : start + CHUNK]]
            assert http.put("/v1/recipients:batch", json={"recipients": chunk}).status_code == 200
            added = http.put(
                f"/v1/topics/fans-{run}/recipients", json={"recipients": ids[start : start + CHUNK]}
            )
            assert added.status_code == 200, added.text

    definition = {
        "name": f"fans-{run}",
        "event": "user.registered",
        "channel": "email",
        "template": "user.registered",
        "filter": {"data.run": {"eq": run}},
    }
    with subscribed(stack, definition):
        with stack.client() as http:
            published = http.post(
                "/v1/events",
                json={
                    "type": "user.registered",
                    "data": {**user(address("fan-signup")), "run": run},
                    "topics": [f"fans-{run}"],
                },
            )
        assert published.status_code == 202, published.text
        wait_until(
            lambda: all(smtp.to(email) for email in emails.values()),
            timeout_s=180,
            what=f"{MEMBERS} emails",
        )

    assert all(len(smtp.to(email)) == 1 for email in emails.values())
    event = stack.settled(published.json()["id"], timeout_s=60)
    fans = [n for n in event["notifications"] if n["subscription"] == f"fans-{run}"]
    assert len(fans) == MEMBERS
    assert {n["status"] for n in fans} == {"sent"}
