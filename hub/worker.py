"""The Celery app: reliability settings, beat schedule, and how work is enqueued.

Nothing is built at import: :func:`get_app` makes the app on first use, from
the settings. The queues are named in :mod:`hub.queues` and by the channels;
a delivery goes to its channel family's queue for its priority class.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Celery, bootsteps
from celery.utils.log import get_logger
from kombu.entity import Queue

from hub import queues
from hub.embedded import running_url
from hub.errors import BrokerUnavailable, ConfigError
from hub.settings import Settings, get_settings
from hub.store.notifications import Queued

_log = get_logger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from the hub's own."""
    broker_url = settings.broker_url or running_url(settings.var_dir)
    if not broker_url:
        raise ConfigError(
            "broker_url is empty and no embedded Redis is running: start `hub up`, or set "
            "broker_url in settings.toml or HUB_BROKER_URL"
        )
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        # A publish to a dead broker must fail fast (the API answers 503), not hang.
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        # Redis only redelivers unacked messages after the visibility timeout;
        # it must exceed the longest retry countdown (ETA tasks stay unacked).
        "broker_transport_options": {
            "visibility_timeout": int(settings.delivery.backoff_max_s * 2 + 3600),
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Backstops behind the per-attempt timeout: a batch whose provider
        # hangs is cut (soft) or its process killed (hard); the sweeper then
        # retries what it left in "sending".
        "task_annotations": {
            name: {
                "soft_time_limit": settings.delivery.attempt_timeout_s * 4 + 10,
                "time_limit": settings.delivery.attempt_timeout_s * 4 + 30,
            }
            # Routing tasks deliver small batches themselves (hub.tasks.route_many).
            for name in ("hub.deliver", "hub.route", "hub.route_many")
        },
        "worker_hijack_root_logger": False,
        "task_default_queue": queues.DEFAULT,
        "task_queues": [Queue(name) for name in queues.all_queues(settings.channel_classes)],
        "task_routes": {
            "hub.route": {"queue": queues.EVENTS},
            "hub.route_many": {"queue": queues.EVENTS},
            "hub.sweep": {"queue": queues.EVENTS},
            "hub.release": {"queue": queues.EVENTS},
            "hub.alerts_tick": {"queue": queues.EVENTS},
            "hub.purge": {"queue": queues.EVENTS},
            "hub.status_webhook": {"queue": queues.STATUS_WEBHOOKS},
        },
        "beat_schedule": {
            "sweep": {"task": "hub.sweep", "schedule": settings.delivery.sweep_interval_s},
            "release": {
                "task": "hub.release",
                "schedule": settings.scheduling.release_interval_s,
            },
            # Expires before the next tick: a backlog of ticks adds nothing.
            "alerts": {
                "task": "hub.alerts_tick",
                "schedule": settings.alerts.tick_s,
                "options": {"expires": settings.alerts.tick_s * 5},
            },
            # Retention (hub.store.retention): one purge at a time is enough.
            "purge": {
                "task": "hub.purge",
                "schedule": settings.retention.interval_s,
                "options": {"expires": settings.retention.interval_s},
            },
        },
    }


@cache
def get_app() -> Celery:
    """The process's Celery app, configured from the settings on first use.

    Raises :class:`ConfigError` when there is no broker to talk to.
    """
    app = Celery("hub", include=["hub.tasks"], set_as_current=True)
    app.config_from_object(celery_config(get_settings()))
    app.steps["consumer"].add(ResumeAfterReconnect)
    app.steps["worker"].add(WorkerReports)
    return app


class WorkerReports(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """What a worker tells about itself: its heartbeat and, on ``worker.metrics_port``, /metrics.

    Both live in the main process, not per task: a thread writes the heartbeat
    every ``worker.heartbeat`` (:mod:`hub.health`), and the metrics server
    reads the files its pool processes count into (:mod:`hub.metrics`).
    Counting is switched on in ``__init__``, which runs before the pool forks,
    so every pool process inherits it.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        from celery import signals

        from hub import metrics

        self._settings = get_settings()
        metrics.enable(self._settings, "worker")
        signals.worker_process_shutdown.connect(_pool_process_exited, weak=False)
        self._heartbeat: Any = None
        self._server: Any = None

    def start(self, worker: Any) -> None:
        from hub import metrics
        from hub.health import Heartbeat

        consumes = sorted(worker.app.amqp.queues.consume_from)
        self._heartbeat = Heartbeat(self._settings, worker.hostname, consumes)
        self._heartbeat.start()
        if port := self._settings.worker.metrics_port:
            try:
                self._server = metrics.serve(port, self._settings)
            except OSError as exc:
                # Metrics are worth no failed worker: the API's /metrics still covers it.
                _log.warning("worker /metrics not served on port %d: %s", port, exc)
            else:
                _log.info("worker /metrics on port %d", port)

    def stop(self, worker: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None


def _pool_process_exited(pid: int | None = None, **_: Any) -> None:
    from hub import metrics

    if pid is not None:
        metrics.process_exited(pid)


class ResumeAfterReconnect(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """When the worker reconnects to its broker, re-enqueue what the broker may have lost.

    A broker restart can lose tasks it held (a SIGKILL loses the last second
    of an append-only file; an in-memory broker loses everything). The store
    still has that work, and the periodic sweeper would find it after
    ``stuck_after_s``; this step asks for a sweep of everything queued before
    the reconnect at once, so delivery resumes within seconds. Redelivered
    duplicates are harmless: routing and claiming are idempotent.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        # The consumer restarts its steps after every lost connection; only a
        # restart (not the first start) follows a broker outage.
        if consumer.restart_count < 1:
            return
        before = datetime.now(UTC).isoformat()
        try:
            enqueue("hub.sweep", [before], queues.EVENTS)
        except BrokerUnavailable as exc:
            _log.warning("could not ask for a sweep after reconnecting: %s", exc)
        else:
            _log.warning("reconnected to the broker: re-enqueueing work queued before %s", before)


def queue_for(channel: str, priority: str = queues.NORMAL) -> str:
    """The queue a channel's deliveries of ``priority`` run on (``email.critical``)."""
    return queues.queue_name(get_settings().channel_classes[channel].queue, priority)


def consumes(queue: str) -> bool:
    """Whether this worker takes tasks from ``queue`` (``-Q``); outside a worker, every queue."""
    return queue in get_app().amqp.queues.consume_from


def enqueue(task: str, args: list[Any], queue: str, countdown: float | None = None) -> None:
    """Publish a task by name, turning broker failures into :class:`BrokerUnavailable`."""
    try:
        get_app().send_task(task, args=args, queue=queue, countdown=countdown)
    except (kombu.exceptions.OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"broker unavailable: {exc}", maybe_taken=_timed_out(exc)) from exc


def _timed_out(exc: BaseException) -> bool:
    """Whether the publish went out and its answer never came (the broker may have it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | redis.exceptions.TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    # kombu re-raises some transport errors with only their text.
    return "timeout" in str(exc).lower()


def enqueue_routes(event_ids: list[str], chunk: int = 100) -> None:
    """Route many events with few broker messages (chunks spread over workers)."""
    for start in range(0, len(event_ids), chunk):
        enqueue("hub.route_many", [event_ids[start : start + chunk]], queues.EVENTS)


DELIVERY_BATCH = 50

# A channel and a priority: the notifications that share a queue.
Lane = tuple[str, str]


def lane_of(queued: tuple[str, str]) -> Lane:
    """``(channel, priority)`` of an ``(id, channel)`` pair: a :class:`Queued`'s, else normal."""
    priority = queued.priority if isinstance(queued, Queued) else queues.NORMAL
    return queued[1], priority


def enqueue_deliveries(
    notifications: Iterable[tuple[str, str]],
    countdown: float | None = None,
    reserved: bool = False,
) -> None:
    """Enqueue ``(id, channel)`` pairs as batches of up to DELIVERY_BATCH per channel and priority.

    Each batch goes to the queue of its priority (a :class:`Queued`'s; a plain
    pair is ``normal``), so a critical one never waits behind a low backlog.
    ``reserved``: they hold rate-limit tokens for the moment they come back.
    """
    by_lane: dict[Lane, list[str]] = {}
    for queued in notifications:
        by_lane.setdefault(lane_of(queued), []).append(queued[0])
    for (channel, priority), ids in by_lane.items():
        for start in range(0, len(ids), DELIVERY_BATCH):
            batch = ids[start : start + DELIVERY_BATCH]
            args: list[Any] = [channel, batch, True] if reserved else [channel, batch]
            enqueue("hub.deliver", args, queue_for(channel, priority), countdown)
