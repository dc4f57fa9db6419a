"""Spec: routing and delivery can run on separate workers, each serving its own queues.

A worker routes and delivers small batches itself only when it serves the
channel's queue; otherwise the delivery waits on that queue for its workers.
"""

from __future__ import annotations

from pathlib import Path

import redis

from tests.conftest import (
    other_redis_db,
    running_stack,
    start_hub_process,
    stop,
    wait_until,
)
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def test_a_routing_worker_leaves_email_to_the_workers_of_the_email_queue(
    tmp_path: Path, broker_url: str, smtp: SmtpSink
) -> None:
    url = other_redis_db(broker_url)
    queue = redis.Redis.from_url(url)
    with running_stack(tmp_path, url, smtp, worker_args=["-Q", "celery,events"]) as stack:
        to = address("split")
        event_id = stack.publish("user.registered", user(to))

        wait_until(lambda: queue.llen("email") == 1, what="the delivery on the email queue")
        [waiting] = stack.event(event_id)["notifications"]
        email_worker = start_hub_process(
            ["worker", "-Q", "email", "--concurrency", "1"], stack.env, tmp_path / "email.log"
        )
        try:
            [sent] = stack.settled(event_id)["notifications"]
        finally:
            stop(email_worker)

    assert waiting["status"] == "queued"
    assert smtp.to(to) and len(smtp.to(to)) == 1
    assert sent["status"] == "sent" and sent["attempts"] == 1
