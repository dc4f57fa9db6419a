"""``hub up``, ``hub api``, ``hub worker`` and ``hub beat``: running the stack or its parts."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from hub import logs, queues
from hub.cli.common import checked_or_fail, fail, settings_or_fail
from hub.errors import ConfigError, EmbeddedRedisError
from hub.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

LogFormat = Annotated[
    str, typer.Option("--log-format", help="text or json [default: logging.format]")
]
# `hub up` starts its parts without their banners: its own is the last word.
Quiet = Annotated[bool, typer.Option("--quiet", help="No start-up banner", hidden=True)]


def _dev_key(settings: Settings) -> str:
    """The development key in ``<var>/dev-api-key``, created on the first ``hub up``."""
    from hub import keys

    path = settings.var_dir / "dev-api-key"
    url = settings.resolved_database_url
    if path.exists() and keys.is_valid(url, key := path.read_text().strip()):
        return key
    key = keys.create_key(url, f"dev-{int(time.time())}", scopes=[keys.ADMIN])
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def check() -> None:
    """Validate settings, subscriptions and templates; print each problem with its file and line.

    With a store, also list what changed since the last ``hub reload``.
    """
    from hub.cli.reload import report_changes

    settings = settings_or_fail()
    checked_or_fail(settings)
    typer.echo(
        f"ok: {len(settings.events)} event types, {len(settings.subscriptions)} subscriptions, "
        f"templates in {', '.join(str(d) for d in settings.all_template_dirs)}"
    )
    report_changes(settings)


def up(
    host: Annotated[str, typer.Option(help="API host [default: api.host]")] = "",
    port: Annotated[int, typer.Option(help="API port [default: api.port]")] = 0,
    log_format: LogFormat = "",
) -> None:
    """Run everything: embedded Redis (unless broker_url is set), workers, beat and API.

    Besides the worker of every queue, a small one serves routing and the
    ``*.critical`` queues, so a critical alert never waits behind a backlog.
    """
    from hub.embedded import EmbeddedRedis
    from hub.store.db import migrate
    from hub.supervisor import Supervisor, child_env, hub_command

    started = time.monotonic()
    _log_format(log_format)
    settings = settings_or_fail()
    checked_or_fail(settings)
    host, port = host or settings.api.host, port or settings.api.port
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    try:
        migrate(settings.resolved_database_url)
    except SQLAlchemyError as exc:
        raise fail(f"store at {settings.resolved_database_url}: {exc}") from None
    key = _dev_key(settings)
    embedded = None
    broker_url = settings.broker_url
    if not broker_url:
        embedded = EmbeddedRedis(settings.var_dir / "redis")
        try:
            broker_url = embedded.start(port=settings.embedded_redis_port)
        except EmbeddedRedisError as exc:
            raise fail(str(exc)) from None
    supervisor = Supervisor(child_env(HUB_BROKER_URL=broker_url))
    try:
        supervisor.start("worker", hub_command("worker", "--quiet"))
        critical = ["-Q", queues.CRITICAL_WORKER, "--concurrency", "2", "-n", "critical@%h"]
        supervisor.start("worker-critical", hub_command("worker", "--quiet", *critical))
        supervisor.start("beat", hub_command("beat", "--quiet"))
        supervisor.start("api", hub_command("api", "--host", host, "--port", str(port)))
        _wait_for_api(host, port)
        _wait_for_worker(broker_url)
        where = f" (embedded, data in {embedded.folder})" if embedded else ""
        typer.echo(
            f"\nhub is up in {time.monotonic() - started:.1f}s\n"
            f"  broker   {broker_url}{where}\n"
            f"  store    {settings.resolved_database_url}\n"
            f"  api      http://{host}:{port}  (docs at /docs)\n"
            f"  ui       http://{host}:{port}/ui/  (log in with the api key)\n"
            f"  outbox   {settings.var_dir.resolve() / 'outbox'}\n"
            f"  api key  {key}  (also in {settings.var_dir / 'dev-api-key'})\n"
            "Press Ctrl-C to stop.\n"
        )
        crash_looping = supervisor.wait(on_hangup=hub_command("reload"))
    finally:
        supervisor.stop()
        if embedded:
            embedded.stop()
    if crash_looping:
        raise fail(f"{crash_looping} keeps exiting; stopped the rest", code=1)


def _wait_for_api(host: str, port: int, timeout_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{host}:{port}/healthz", timeout=1.0).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise fail(f"the API did not answer on {host}:{port} within {timeout_s:.0f}s", code=1)


def _wait_for_worker(broker_url: str, timeout_s: float = 60.0) -> None:
    from celery import Celery

    deadline = time.monotonic() + timeout_s
    with Celery(broker=broker_url) as probe:
        while time.monotonic() < deadline:
            if probe.control.ping(timeout=0.5):
                return
    raise fail(f"no worker answered within {timeout_s:.0f}s", code=1)


def api(
    host: Annotated[str, typer.Option(help="Bind address")] = "",
    port: Annotated[int, typer.Option(help="Port")] = 0,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes")] = 1,
    log_format: LogFormat = "",
) -> None:
    """Run the HTTP API."""
    import uvicorn

    _log_format(log_format)
    settings = settings_or_fail()
    if (bind := settings.api.metrics_bind) is not None:
        from hub import metrics

        # One server for every uvicorn worker: they all write to this machine's folders.
        metrics.serve(bind[1], settings, bind[0], lambda: metrics.machine_folders(settings))
    uvicorn.run(
        "hub.api:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers,
        log_level="info",
        log_config=logs.uvicorn_config(settings.logging.format),
        access_log=settings.api.access_log,
    )


def worker(
    consume: Annotated[
        str,
        typer.Option(
            "-Q",
            "--queues",
            help="Queues to consume, comma-separated; globs allowed: 'events,*.critical'. "
            "Each channel family has <family>.critical, <family>.high, <family> (normal) "
            "and <family>.low (default: all)",
        ),
    ] = "",
    concurrency: Annotated[
        int, typer.Option("-c", "--concurrency", help="Processes (default: 2 per core)")
    ] = 0,
    pool: Annotated[str, typer.Option(help="prefork, threads or solo")] = "prefork",
    name: Annotated[
        str,
        typer.Option(
            "-n", "--hostname", help="Node name, unique per host (default: celery@<host>)"
        ),
    ] = "",
    log_format: LogFormat = "",
    quiet: Quiet = False,
) -> None:
    """Run a Celery worker (all queues unless -Q names some)."""
    from hub import events
    from hub.reloads import record_first_snapshot
    from hub.runtime import Runtime
    from hub.templates import sync_files

    _log_format(log_format)
    settings = settings_or_fail()
    app = _celery()
    try:
        # Once per worker, not per child: the files' versions are in the store
        # before any child claims (hub reload imports later edits).
        sync_files(settings.resolved_database_url, settings.all_template_dirs)
        # Built once here so a bad channel setting stops the worker now; Celery
        # would only log it from inside each child process.
        Runtime(settings, events.publish).close()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    record_first_snapshot(settings)
    known = queues.all_queues(settings.channel_classes)
    try:
        consume = ",".join(queues.expand(consume, known) if consume else known)
    except ValueError as exc:
        raise fail(str(exc)) from None
    # Mingle and gossip sync state between workers at start-up; the hub keeps
    # its state in the store, so they would only delay readiness. Task events
    # stay off: three Redis publishes per task cost the consumer ~40% of its
    # time. Flower switches them on at run time when it starts.
    argv = [*(["--quiet"] if quiet else []), "worker", "-Q", consume, "--pool", pool]
    argv += ["--loglevel", "INFO"]
    argv += ["--without-mingle", "--without-gossip"]
    if name:
        argv += ["--hostname", name]
    # Two per core: a delivery spends more time waiting on its provider and
    # the store than computing, and one process per core left the cores idle
    # while tasks queued (p99 at 200 ev/s: 138 ms, against 50 ms with two).
    argv += ["--concurrency", str(concurrency or 2 * (os.cpu_count() or 1))]
    app.worker_main(argv)


def beat(log_format: LogFormat = "", quiet: Quiet = False) -> None:
    """Run Celery beat (sweeper, releases, alerts, retention): one per deployment.

    Beat runs only while it holds the deployment's lock (hub.beat_lock); a
    second ``hub beat`` says another one holds it and waits as standby, and
    takes over within beat.lock_ttl of the first one dying.
    """
    from hub.beat_lock import beat_lock, run_locked

    _log_format(log_format)
    settings = settings_or_fail()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.var_dir / "celerybeat-schedule"
    app = _celery()
    ttl_s = settings.beat.lock_ttl_s

    def start_beat(on_stop: Callable[[Callable[[], None]], None]) -> None:
        from celery.beat import Service

        class LockedService(Service):  # type: ignore[misc]  # celery is untyped
            """Beat's loop, which the lock's renewer can stop from its thread."""

            def start(self, embedded_process: bool = False) -> None:
                on_stop(self.stop)
                super().start(embedded_process)

        runner = app.Beat(
            schedule=str(schedule), loglevel="INFO", max_interval=min(5, ttl_s / 3), quiet=quiet
        )
        runner.Service = LockedService
        try:
            runner.run()
        finally:
            # Beat's handlers save its schedule and exit; as standby, plain ones.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def say(message: str) -> None:
        typer.echo(f"hub beat: {message}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_locked(beat_lock(settings), ttl_s, start_beat, say)


def _celery() -> Celery:
    from celery.signals import after_setup_logger

    from hub.worker import get_app

    settings = settings_or_fail()
    after_setup_logger.connect(_log_setup(settings.logging.format), weak=False)
    try:
        return get_app()
    except ConfigError as exc:
        raise fail(str(exc)) from None


# Celery's line per task (received, succeeded) and beat's per tick: a line
# per message at INFO buries what matters; they show with --loglevel DEBUG.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
BEAT_TICK = "Scheduler: Sending due task"


def _log_setup(kind: str) -> Callable[..., None]:
    """Celery's logging, set up: our format, and per-task lines moved to DEBUG."""

    def setup(logger: logging.Logger, loglevel: int, **_: Any) -> None:
        logs.use_format(kind, logger.handlers)
        if loglevel > logging.DEBUG:
            for name in PER_TASK_LOGGERS:
                logging.getLogger(name).setLevel(max(loglevel, logging.WARNING))
            logging.getLogger("celery.beat").addFilter(_not_a_tick)

    return setup


def _not_a_tick(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(BEAT_TICK)


def _log_format(kind: str) -> None:
    """``--log-format``: this command and every process it starts log as ``kind``."""
    if kind and kind not in ("text", "json"):
        raise fail(f"--log-format: {kind!r} is neither text nor json")
    if kind:
        os.environ["HUB_LOGGING__FORMAT"] = kind

