"""Celery tasks: thin wrappers that hand ids to events, routing and delivery.

Tasks take ids and primitives only. Every task is safe to run twice, because
brokers redeliver (acks_late): routing makes deterministic notification ids,
delivery claims a notification atomically before calling a provider.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from hub import alerting, completion, events, logs, queues, status_webhooks
from hub.delivery import claim, send
from hub.delivery import deliver as deliver_notifications
from hub.errors import ConfigError, EventError, PermanentError, TransientError
from hub.middleware import Batch, Turn
from hub.middleware.retries import backoff_s
from hub.routing import Routed, route_events
from hub.runtime import Runtime, close_runtime, get_runtime
from hub.store import backlog, retention, schedule
from hub.store import events as stored_events
from hub.store.db import seconds_ago, session
from hub.store.models import utcnow
from hub.store.notifications import Queued
from hub.worker import (
    DELIVERY_BATCH,
    Lane,
    consumes,
    enqueue_deliveries,
    enqueue_routes,
    lane_of,
    queue_for,
)

log = logging.getLogger(__name__)

# A database that is locked or restarting fails a task after its busy
# timeout; retried within seconds, its work resumes when the database does,
# instead of waiting for the sweeper's stuck_after_s. Safe: every task is
# idempotent (see above).
STORE_RETRIES: dict[str, object] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="hub.publish")
def publish(
    type: str,
    data: dict[str, Any],
    id: str | None = None,
    recipients: list[Any] | None = None,
    topics: list[str] | None = None,
    deliver_at: str | None = None,
    cancellation_key: str | None = None,
) -> dict[str, Any]:
    """Publish an event from another Celery app: ``send_task("hub.publish", kwargs=...)``.

    ``deliver_at`` is an ISO 8601 time with an offset, as in the HTTP API.
    """
    try:
        at = datetime.fromisoformat(deliver_at) if deliver_at is not None else None
    except ValueError:
        errors = [
            {"loc": ["deliver_at"], "msg": "not an ISO 8601 time", "type": "datetime_parsing"}
        ]
        log.error("rejected event from send_task: %s", errors)
        return {"status": "rejected", "errors": errors}
    to = events.Envelope(recipients or [], topics or [], at, cancellation_key)
    try:
        accepted = events.publish(type, data, id, keep_if_broker_down=True, to=to)
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


@shared_task(name="hub.route_many", **STORE_RETRIES)
def route_many(event_ids: list[str]) -> int:
    """Route a batch of stored events; deliver a small result right here.

    A small batch (the common case: the few events the API stored together)
    is claimed in the routing transaction and sent by this task when this
    worker serves the channel's queue: a second Celery task and a second
    commit per event would double what bounds latency at a steady rate.
    Only one channel's batch of one priority is claimed so, the most urgent:
    a second one would sit claimed, its lease unrenewed, while the first is
    sent. Other batches and larger ones are spread over the channel queues of
    their priorities, so every worker shares them.
    """
    runtime = get_runtime()
    try:
        result, claimed_lane, claimed = _route(runtime, event_ids)
    except SQLAlchemyError:
        raise  # the store itself failed: retried (STORE_RETRIES), then left to the sweeper
    except Exception as exc:
        # One bad event (data that cannot be decoded, a bug it triggers) must
        # not fail the events routed with it: each is routed on its own.
        if len(event_ids) > 1:
            return sum(route_many([event_id]) for event_id in event_ids)
        _routing_failed(runtime, event_ids[0], exc)
        return 0
    completion.announce(events.publish, result.completed)
    routed = result.queued
    queued = [one for one in routed if one.not_before is None]
    enqueue_deliveries(one for one in queued if claimed is None or lane_of(one) != claimed_lane)
    _count_down(runtime, [one for one in routed if one.not_before is not None])
    if claimed is not None:
        _retry_later(claimed.channel, send(runtime, claimed))
    return len(routed)


def _count_down(runtime: Runtime, held: list[Queued]) -> None:
    """Send held notifications due within ``scheduling.countdown_max`` as broker countdowns.

    Beat releases every held notification when its time comes; a countdown
    makes a short wait end on time to the second rather than at beat's next
    tick. Longer waits are left to beat alone (see SchedulingSettings).
    """
    horizon = runtime.settings.scheduling.countdown_max_s
    now = utcnow()
    by_moment: dict[datetime, list[Queued]] = {}
    for one in held:
        assert one.not_before is not None
        if (one.not_before - now).total_seconds() <= horizon:
            by_moment.setdefault(one.not_before, []).append(one)
    for moment, group in by_moment.items():
        enqueue_deliveries(group, countdown=max((moment - now).total_seconds(), 0))


def _route(runtime: Runtime, event_ids: list[str]) -> tuple[Routed, Lane | None, Batch | None]:
    """Route in one transaction; claim the one batch this worker sends itself, if any.

    Returns every notification to deliver or hold (see :func:`route_events`).
    """
    with session(runtime.settings.resolved_database_url) as db:
        routed = route_events(db, runtime.settings, runtime.templates, event_ids)
        queued = [one for one in routed.queued if one.not_before is None]
        by_lane: dict[Lane, list[str]] = {}
        for one in queued:
            by_lane.setdefault(lane_of(one), []).append(one[0])
        mine = [lane for lane in by_lane if consumes(queue_for(*lane))]
        if len(queued) > DELIVERY_BATCH or not mine:
            return routed, None, None
        lane = min(mine, key=lambda lane: queues.PRIORITIES.index(lane[1]))
        return routed, lane, claim(runtime, db, lane[0], by_lane[lane])


def _routing_failed(runtime: Runtime, event_id: str, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:1000]
    limit = runtime.settings.delivery.max_routing_attempts
    with session(runtime.settings.resolved_database_url) as db:
        quarantined = stored_events.record_routing_failure(db, event_id, error, limit)
    if quarantined:
        log.error(
            "event %s quarantined after %d failed routings: %s",
            event_id,
            limit,
            error,
            extra=logs.ids(event_id),
        )
    else:
        log.warning(
            "routing event %s failed (the sweeper tries again): %s",
            event_id,
            error,
            extra=logs.ids(event_id),
        )


@shared_task(name="hub.deliver", **STORE_RETRIES)
def deliver(channel: str, notification_ids: list[str], reserved: bool = False) -> dict[str, int]:
    """One attempt for each of a batch; retries and rate-limit waits come back after a countdown."""
    turns = deliver_notifications(get_runtime(), channel, notification_ids, reserved)
    _retry_later(channel, turns)
    return dict(Counter(str(turn.status) for turn in turns))


def _retry_later(channel: str, turns: list[Turn]) -> None:
    for turn in turns:
        if turn.retry_in_s is not None:
            # A new message rather than self.retry(): attempts are counted in
            # the store, and a rate-limit wait must not count as one.
            notification = turn.notification
            enqueue_deliveries(
                [Queued(notification.id, channel, notification.priority)],
                countdown=turn.retry_in_s,
                reserved=turn.holds_token,
            )


@shared_task(name="hub.sweep")
def sweep(before: str | None = None) -> dict[str, int]:
    """Re-enqueue what the broker lost: unrouted events and stalled notifications.

    Queued work counts as lost after ``stuck_after_s``, or, with ``before``
    (an ISO time: a worker reconnected to a restarted broker then), when it
    was queued before that moment.
    """
    settings = get_runtime().settings
    policy = settings.delivery
    stuck = datetime.fromisoformat(before) if before else seconds_ago(policy.stuck_after_s)
    events_swept = notifications_swept = 0
    with session(settings.resolved_database_url) as db:
        for page in stored_events.stuck_events(db, stuck):
            enqueue_routes(page)
            events_swept += len(page)
    while True:
        # Each page is marked re-enqueued as it is taken, so the next one is new.
        with session(settings.resolved_database_url) as db:
            notifications = backlog.stuck_notifications(
                db,
                stuck,
                seconds_ago(policy.stuck_after_s + policy.backoff_max_s),
                seconds_ago(policy.lease_s),
            )
        enqueue_deliveries(notifications)
        notifications_swept += len(notifications)
        if len(notifications) < backlog.SWEEP_PAGE:
            break
    if events_swept or notifications_swept:
        log.warning(
            "sweeper re-enqueued %d events, %d notifications", events_swept, notifications_swept
        )
    return {"events": events_swept, "notifications": notifications_swept}


@shared_task(name="hub.release", **STORE_RETRIES)
def release() -> int:
    """Enqueue the held notifications whose time came (beat runs it every release_interval)."""
    settings = get_runtime().settings
    released = 0
    while True:
        with session(settings.resolved_database_url) as db:
            due = schedule.release_due(db)
        enqueue_deliveries(due)
        released += len(due)
        if len(due) < schedule.RELEASE_PAGE:
            return released


@shared_task(name="hub.alerts_tick", **STORE_RETRIES)
def alerts_tick() -> int:
    """Send what alert groups have due: notifications, escalations, resolves (hub.alerting)."""
    runtime = get_runtime()
    with session(runtime.settings.resolved_database_url) as db:
        due = alerting.tick(db, runtime.settings, runtime.templates, utcnow())
    enqueue_deliveries(one for one in due if one.not_before is None)
    _count_down(runtime, [one for one in due if one.not_before is not None])
    return len(due)


@shared_task(name="hub.status_webhook", bind=True, max_retries=None)
def status_webhook(self: Any, index: int, url: str, body: dict[str, Any]) -> str:
    """POST one status report to one receiver (hub.status_webhooks); retried like a delivery.

    A transient failure runs again after the deliveries' backoff, up to
    ``delivery.max_attempts``; a permanent one, or the last, is logged and
    dropped. The notification itself never waits for it.
    """
    runtime = get_runtime()
    settings = runtime.settings
    hook = status_webhooks.receiver(settings, index, url)
    what = f"{status_webhooks.KEY}[{index}] {body.get('id')}"
    if hook is None:
        log.warning("%s dropped: its receiver is no longer in the settings", what)
        return "dropped"
    key = f"{status_webhooks.KEY}[{index}].url"
    allow_private = settings.outbound.allow_private_targets
    attempt = self.request.retries + 1
    try:
        runtime.run(
            status_webhooks.post(hook, key, body, allow_private), timeout_s=hook.timeout_s + 5
        )
    except TransientError as exc:
        if attempt >= settings.delivery.max_attempts:
            log.error("%s failed after %d attempts: %s", what, attempt, exc)
            return "failed"
        countdown = backoff_s(attempt, settings, exc.retry_after_s)
        log.warning("%s attempt %d failed (again in %.1fs): %s", what, attempt, countdown, exc)
        raise self.retry(countdown=countdown) from exc
    except (PermanentError, ConfigError) as exc:
        log.error("%s failed for good: %s", what, exc)
        return "failed"
    return "sent"


@shared_task(name="hub.purge", **STORE_RETRIES)
def purge() -> dict[str, int]:
    """Delete finished rows past their retention (beat runs it every retention.interval)."""
    settings = get_runtime().settings
    policy = settings.retention
    purged = retention.purge(
        settings.resolved_database_url,
        events_before=seconds_ago(policy.events_s),
        attempts_before=seconds_ago(policy.attempts_s),
        batch=policy.batch,
    )
    if any(purged.values()):
        log.info("retention purged %s", ", ".join(f"{n} {what}" for what, n in purged.items()))
    return purged


@worker_process_init.connect
def _open_runtime(**_: Any) -> None:
    # Compile templates and open provider clients before the first task arrives.
    get_runtime()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    close_runtime()
