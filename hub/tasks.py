"""Celery tasks: thin wrappers that hand ids to events, routing and delivery.

Tasks take ids and primitives only. Every task is safe to run twice, because
brokers redeliver (acks_late): routing makes deterministic notification ids,
delivery claims a notification atomically before calling a provider.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from hub import events
from hub.delivery import Outcome, claim, send
from hub.delivery import deliver as deliver_notifications
from hub.errors import EventError
from hub.routing import route_events
from hub.runtime import close_runtime, get_runtime
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import seconds_ago, session
from hub.worker import (
    DELIVERY_BATCH,
    consumes,
    enqueue_deliveries,
    enqueue_route,
    queue_for,
)

log = logging.getLogger(__name__)


@shared_task(name="hub.publish")
def publish(type: str, data: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """Publish an event from another Celery app: ``send_task("hub.publish", kwargs=...)``."""
    try:
        accepted = events.publish(type, data, id, keep_if_broker_down=True)
    except EventError as exc:
        # Retrying cannot fix bad input; record why in the worker log and result.
        log.error("rejected event from send_task: %s %s", exc, exc.errors)
        return {"status": "rejected", "errors": exc.errors}
    return {"id": accepted.id, "status": "accepted", "duplicate": accepted.duplicate}


@shared_task(name="hub.route")
def route(event_id: str) -> int:
    """Turn a stored event into notifications and deliver or enqueue them."""
    routed: int = route_many([event_id])
    return routed


@shared_task(name="hub.route_many")
def route_many(event_ids: list[str]) -> int:
    """Route a batch of stored events; deliver a small result right here.

    A small batch (the common case: the few events the API stored together)
    is claimed in the routing transaction and sent by this task when this
    worker serves the channel's queue: a second Celery task and a second
    commit per event would double what bounds latency at a steady rate.
    Larger batches are spread over the channel queues, so every worker
    shares them.
    """
    runtime = get_runtime()
    with session(runtime.settings.resolved_database_url) as db:
        queued = route_events(db, runtime.settings, runtime.templates, event_ids)
        by_channel: dict[str, list[str]] = {}
        for notification_id, channel in queued:
            by_channel.setdefault(channel, []).append(notification_id)
        small = len(queued) <= DELIVERY_BATCH
        here = {
            channel: ids
            for channel, ids in by_channel.items()
            if small and consumes(queue_for(channel))
        }
        claims = [claim(runtime, db, channel, ids) for channel, ids in here.items()]
    enqueue_deliveries(
        (notification_id, channel)
        for channel, ids in by_channel.items()
        if channel not in here
        for notification_id in ids
    )
    for claimed in claims:
        _retry_later(claimed.channel, send(runtime, claimed))
    return len(queued)


@shared_task(name="hub.deliver")
def deliver(channel: str, notification_ids: list[str]) -> dict[str, int]:
    """One attempt for each of a batch; retries and rate-limit waits come back after a countdown."""
    outcomes = deliver_notifications(get_runtime(), channel, notification_ids)
    _retry_later(channel, outcomes)
    return dict(Counter(str(outcome.status) for outcome in outcomes))


def _retry_later(channel: str, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.retry_in_s is not None:
            # A new message rather than self.retry(): attempts are counted in
            # the store, and a rate-limit wait must not count as one.
            enqueue_deliveries([(outcome.notification_id, channel)], countdown=outcome.retry_in_s)


@shared_task(name="hub.sweep")
def sweep() -> dict[str, int]:
    """Re-enqueue what the broker lost: unrouted events and stalled notifications."""
    settings = get_runtime().settings
    policy = settings.delivery
    with session(settings.resolved_database_url) as db:
        event_ids = stored_events.stuck_events(db, seconds_ago(policy.stuck_after_s))
        notifications = stored_notifications.stuck_notifications(
            db,
            seconds_ago(policy.stuck_after_s),
            seconds_ago(policy.stuck_after_s + policy.backoff_max_s),
        )
    for event_id in event_ids:
        enqueue_route(event_id)
    enqueue_deliveries(notifications)
    if event_ids or notifications:
        log.warning(
            "sweeper re-enqueued %d events, %d notifications", len(event_ids), len(notifications)
        )
    return {"events": len(event_ids), "notifications": len(notifications)}


@worker_process_init.connect
def _open_runtime(**_: Any) -> None:
    # Compile templates and open provider clients before the first task arrives.
    get_runtime()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    close_runtime()
