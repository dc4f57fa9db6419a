"""``hub status``: ``/readyz``'s checks in the terminal, with the queue depths and the workers."""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer

from hub.cli.common import settings_or_fail

if TYPE_CHECKING:
    from hub.health import Readiness
    from hub.settings import Settings


def status(
    worker: Annotated[
        bool,
        typer.Option(
            "--worker",
            help="Only this host's worker heartbeat (a liveness probe for compose or Kubernetes)",
        ),
    ] = False,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code", help="Exit 1 when something checked is down (with --worker: stale)"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print /readyz's JSON body")] = False,
) -> None:
    """Whether the hub can work: database, migrations, broker, workers; and queue depths."""
    from hub import health

    settings = settings_or_fail()
    if worker:
        host = socket.gethostname()
        check = health.guarded(lambda: health.check_workers(settings, host=host))
        if as_json:
            typer.echo(json.dumps({"status": check.status, "detail": check.detail}))
        else:
            typer.echo(f"worker on {host}: {check.status}: {check.detail}")
        if exit_code and not check.ok:
            raise typer.Exit(1)
        return
    readiness = health.readiness(settings)
    if as_json:
        typer.echo(json.dumps(readiness.as_json()))
    else:
        _print(settings, readiness)
    if exit_code and not readiness.ok:
        raise typer.Exit(1)


def _print(settings: Settings, readiness: Readiness) -> None:
    from hub import health

    state = "ready" if readiness.ok else "unavailable"
    typer.secho(f"hub: {state}", fg=typer.colors.GREEN if readiness.ok else typer.colors.RED)
    for name, check in readiness.checks.items():
        colour = typer.colors.GREEN if check.ok else typer.colors.RED
        mark = typer.style(f"{check.status:<4}", fg=colour)
        typer.echo(f"  {name:<11} {mark}  {check.detail}")
    try:
        beats = health.heartbeats(settings)
    except Exception:
        beats = []
    if beats:
        typer.echo("workers:")
        now = time.time()
        for beat in beats:
            age = beat.age_s(now)
            flag = "" if age < health.STALE_AFTER_S else "  (stale)"
            typer.echo(f"  {beat.node:<30} pid {beat.pid:<7} {age:5.0f}s ago{flag}  {beat.queues}")
    try:
        depths = health.queue_depths(settings)
    except Exception as exc:
        typer.echo(f"queues: unknown ({health.describe(exc)})")
        return
    if not depths:
        typer.echo("queues: unknown (no broker)")
        return
    typer.echo("queues:")
    for queue, depth in depths.items():
        typer.echo(f"  {queue:<20} {depth}")
