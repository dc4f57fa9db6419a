"""The ``hub`` command: run the stack or its parts, publish events, manage keys."""

from __future__ import annotations

import os
import sys

import typer

from hub import logs
from hub.cli import alerts, manage, reload, run, scaffold, status

# Commands import what they run when they run: `hub --help` and `hub publish`
# must not pay for loading Celery, FastAPI or uvicorn.
cli = typer.Typer(help="hub: event-driven notifications on Celery and Redis.", no_args_is_help=True)
commands = (scaffold.init, run.up, run.check, reload.reload, run.api, run.worker, run.beat)
for command in (*commands, manage.publish, manage.cancel, manage.outbox, manage.purge):
    cli.command()(command)
cli.command()(status.status)
cli.add_typer(manage.keys_cli, name="keys")
cli.add_typer(manage.db_cli, name="db")
cli.add_typer(manage.notifications_cli, name="notifications")
cli.add_typer(manage.templates_cli, name="templates")
cli.add_typer(manage.recipients_cli, name="recipients")
cli.add_typer(manage.topics_cli, name="topics")
cli.add_typer(manage.subscriptions_cli, name="subscriptions")
cli.add_typer(alerts.alerts_cli, name="alerts")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Files under var/ (the database, the outbox, the dev key, the embedded
    # Redis's data) hold addresses and secrets: only their owner may read them.
    os.umask(0o077)
    logs.install()
    cli(prog_name="hub")
    sys.exit(0)
