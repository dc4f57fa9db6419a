"""The ``hub`` command: run the stack or its parts, publish events, manage keys."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from hub import queues
from hub.channels import CHANNELS
from hub.errors import (
    BrokerUnavailable,
    ConfigError,
    EmbeddedRedisError,
    EventError,
    InvalidFilter,
    NameTaken,
    TemplateError,
)
from hub.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# Commands import what they run when they run: `hub --help` and `hub publish`
# must not pay for loading Celery, FastAPI or uvicorn.
cli = typer.Typer(help="hub: event-driven notifications on Celery and Redis.", no_args_is_help=True)
keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_cli = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
notifications_cli = typer.Typer(help="Find and resend dead letters.", no_args_is_help=True)
templates_cli = typer.Typer(help="Preview templates.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(db_cli, name="db")
cli.add_typer(notifications_cli, name="notifications")
cli.add_typer(templates_cli, name="templates")

def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"hub: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _dev_key(settings: Settings) -> str:
    """The development key in ``<var>/dev-api-key``, created on the first ``hub up``."""
    from hub import keys

    path = settings.var_dir / "dev-api-key"
    url = settings.resolved_database_url
    if path.exists() and keys.is_valid(url, key := path.read_text().strip()):
        return key
    key = keys.create_key(url, f"dev-{int(time.time())}")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


@cli.command()
def up(
    host: Annotated[str, typer.Option(help="API host [default: api.host]")] = "",
    port: Annotated[int, typer.Option(help="API port [default: api.port]")] = 0,
) -> None:
    """Run everything: embedded Redis (unless broker_url is set), worker, beat and API."""
    from hub.embedded import EmbeddedRedis
    from hub.store.db import migrate
    from hub.supervisor import Supervisor, child_env, hub_command

    started = time.monotonic()
    settings = _settings()
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
            broker_url = embedded.start()
        except EmbeddedRedisError as exc:
            raise fail(str(exc)) from None
    supervisor = Supervisor(child_env(HUB_BROKER_URL=broker_url))
    try:
        supervisor.start("worker", hub_command("worker"))
        supervisor.start("beat", hub_command("beat"))
        supervisor.start("api", hub_command("api", "--host", host, "--port", str(port)))
        _wait_for_api(host, port)
        _wait_for_worker(broker_url)
        where = f" (embedded, data in {embedded.folder})" if embedded else ""
        typer.echo(
            f"\nhub is up in {time.monotonic() - started:.1f}s\n"
            f"  broker   {broker_url}{where}\n"
            f"  store    {settings.resolved_database_url}\n"
            f"  api      http://{host}:{port}  (docs at /docs)\n"
            f"  outbox   {settings.var_dir.resolve() / 'outbox'}\n"
            f"  api key  {key}  (also in {settings.var_dir / 'dev-api-key'})\n"
            "Press Ctrl-C to stop.\n"
        )
        died = supervisor.wait()
    finally:
        supervisor.stop()
        if embedded:
            embedded.stop()
    if died:
        raise fail(f"{died} exited unexpectedly; stopped the rest", code=1)


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


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address")] = "",
    port: Annotated[int, typer.Option(help="Port")] = 0,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "hub.api:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers,
        log_level="info",
        access_log=settings.api.access_log,
    )


@cli.command()
def worker(
    consume: Annotated[
        str, typer.Option("-Q", "--queues", help="Queues to consume (default: all)")
    ] = "",
    concurrency: Annotated[
        int, typer.Option("-c", "--concurrency", help="Processes (default: 2 per core)")
    ] = 0,
    pool: Annotated[str, typer.Option(help="prefork, threads or solo")] = "prefork",
) -> None:
    """Run a Celery worker (all queues unless -Q names some)."""
    from hub import events
    from hub.runtime import Runtime

    settings = _settings()
    app = _celery()
    try:
        # Built once here so a bad channel setting stops the worker now; Celery
        # would only log it from inside each child process.
        Runtime(settings, events.publish).close()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    consume = consume or ",".join(queues.all_queues(settings.channel_classes))
    # Mingle and gossip sync state between workers at start-up; the hub keeps
    # its state in the store, so they would only delay readiness. Task events
    # stay off: three Redis publishes per task cost the consumer ~40% of its
    # time. Flower switches them on at run time when it starts.
    argv = ["worker", "-Q", consume, "--pool", pool, "--loglevel", "INFO"]
    argv += ["--without-mingle", "--without-gossip"]
    # Two per core: a delivery spends more time waiting on its provider and
    # the store than computing, and one process per core left the cores idle
    # while tasks queued (p99 at 200 ev/s: 138 ms, against 50 ms with two).
    argv += ["--concurrency", str(concurrency or 2 * (os.cpu_count() or 1))]
    app.worker_main(argv)


@cli.command()
def beat() -> None:
    """Run Celery beat (the sweeper that re-enqueues work the broker lost)."""
    settings = _settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.var_dir / "celerybeat-schedule"
    _celery().start(["beat", "--schedule", str(schedule), "--loglevel", "INFO"])


def _celery() -> Celery:
    from hub.worker import get_app

    _settings()
    try:
        return get_app()
    except ConfigError as exc:
        raise fail(str(exc)) from None


@cli.command()
def publish(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="Event type")],
    data: Annotated[str, typer.Option(help="Event data as JSON, or @file.json")] = "{}",
    id: Annotated[str | None, typer.Option(help="Idempotency key")] = None,
) -> None:
    """Publish an event (the same path as POST /v1/events)."""
    from hub import events

    _settings()
    payload = _json_option("--data", data)
    try:
        accepted = events.publish(event_type, payload, id)
    except EventError as exc:
        details = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors)
        raise fail(f"{exc}\n{details}") from None
    except (BrokerUnavailable, ConfigError) as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(
        json.dumps({"id": accepted.id, "status": "accepted", "duplicate": accepted.duplicate})
    )


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by")],
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from hub import keys
    from hub.store.db import migrate

    settings = _settings()
    migrate(settings.resolved_database_url)
    try:
        key = keys.create_key(settings.resolved_database_url, name)
    except NameTaken as exc:
        raise fail(str(exc)) from None
    typer.echo(key)
    typer.echo(f"API key {name!r} created; store it now, it is not shown again.", err=True)


@notifications_cli.command("list")
def notifications_list(
    status: Annotated[list[str], typer.Option(help="Repeatable: failed, unknown, ...")] = [],  # noqa: B006
    channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
    since: Annotated[str | None, typer.Option(help="1h, 30m, 2d or ISO 8601")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
) -> None:
    """List notifications, newest first."""
    from hub import notifications

    settings = _settings()
    try:
        found = notifications.find(
            settings,
            statuses=status,
            channel=channel,
            since=notifications.parse_since(since),
            limit=limit,
        )
    except InvalidFilter as exc:
        raise fail(str(exc)) from None
    for n in found:
        typer.echo(
            f"{n.id}  {n.status:<11} {n.channel:<8} {n.recipient}  "
            f"attempts={n.attempts}  {n.last_error or ''}"
        )


@notifications_cli.command("retry")
def notifications_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Notification ids")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="All failed ones")] = False,
    unknown: Annotated[bool, typer.Option("--unknown", help="All with unknown outcome")] = False,
    channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
    since: Annotated[str | None, typer.Option(help="1h, 30m, 2d or ISO 8601")] = None,
) -> None:
    """Send failed (or unknown-outcome) notifications again, by id or by filter."""
    from hub import notifications

    statuses = [s for s, wanted in (("failed", failed), ("unknown", unknown)) if wanted]
    if not ids and not statuses:
        raise fail("name notification ids, or --failed and/or --unknown")
    settings = _settings()
    try:
        requeued = notifications.retry(
            settings,
            ids=ids or [],
            statuses=statuses,
            channel=channel,
            since=notifications.parse_since(since),
        )
    except (InvalidFilter, ConfigError) as exc:
        raise fail(str(exc)) from None
    for notification_id in requeued:
        typer.echo(notification_id)
    typer.echo(f"requeued {len(requeued)} notification(s)", err=True)


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply the store's migrations."""
    from hub.store.db import migrate

    settings = _settings()
    migrate(settings.resolved_database_url)
    typer.echo(f"store at {settings.resolved_database_url} is up to date")


@cli.command()
def outbox(
    channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
    last: Annotated[int, typer.Option(help="How many, newest first")] = 10,
    show: Annotated[bool, typer.Option("--show", help="Print the newest one whole")] = False,
) -> None:
    """What the channels without a provider wrote to var/outbox/ instead of sending."""
    settings = _settings()
    root = settings.var_dir / "outbox"
    folders = [root / channel] if channel else sorted(p for p in root.glob("*") if p.is_dir())
    files = sorted(
        (f for folder in folders for f in folder.glob("*") if not f.name.endswith(".part")),
        key=lambda f: f.stat().st_mtime,
        reverse=True,
    )[:last]
    if not files:
        typer.echo(f"nothing in {root}", err=True)
        return
    if show:
        typer.echo(files[0].read_text(encoding="utf-8", errors="replace"))
        return
    for f in files:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.stat().st_mtime))
        typer.echo(f"{stamp}  {f.parent.name:<8} {f}")


@templates_cli.command("preview")
def templates_preview(
    name: Annotated[str, typer.Argument(help="Template folder, e.g. user.registered")],
    channel: Annotated[str, typer.Option(help=f"One of: {', '.join(CHANNELS)}")] = "email",
    data: Annotated[str, typer.Option(help="Sample event data as JSON, or @file.json")] = "{}",
    event_type: Annotated[str, typer.Option(help="Shown to the template as event.type")] = "",
) -> None:
    """Render a template with sample data as a channel would send it (SMS: with segments)."""
    from hub.templates import Templates

    settings = _settings()
    known = settings.channel_classes
    if channel not in known:
        raise fail(f"--channel: unknown channel {channel!r}; known: {', '.join(known)}")
    payload = _json_option("--data", data)
    try:
        rendered, details = Templates(settings.all_template_dirs).preview(
            name, event_type, payload, known[channel]
        )
    except TemplateError as exc:
        raise fail(str(exc)) from None
    if rendered.subject is not None:
        typer.echo(f"Subject: {rendered.subject}\n")
    typer.echo(rendered.text)
    if rendered.html is not None:
        typer.echo(f"\n--- body.html ---\n{rendered.html}")
    if details:
        typer.echo("\n--- " + ", ".join(f"{k}: {v}" for k, v in details.items()))


def _json_option(option: str, value: str) -> Any:
    """Parse a JSON option given inline or as ``@file``, failing with the place of the error."""
    source, text = option, value
    if value.startswith("@"):
        source = value[1:]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"{option}: cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="hub")
    sys.exit(0)
