"""``hub reload``: apply edited settings and templates to every running process.

It loads and checks the settings as ``hub check`` does (a broken file changes
nothing), imports edited template files into the store as new versions,
compares them with the snapshot stored by the last reload (or by the first
worker), names each changed key and whether it applies now or
needs a restart, then moves the settings' version in the store, which every
process follows within a second (:mod:`hub.reloads`).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.cli.common import checked_or_fail, fail, settings_or_fail
from hub.settings import Settings
from hub.settings.snapshot import Change, changes, snapshot


def reload() -> None:
    """Apply edited settings and templates to every running worker and API process."""
    from hub.reloads import CHECK_INTERVAL_S
    from hub.store import config
    from hub.store.db import session
    from hub.templates import sync_files

    settings = settings_or_fail()
    checked_or_fail(settings, "nothing was reloaded")
    now = snapshot(settings, settings.all_template_dirs)
    url = settings.resolved_database_url
    try:
        # Edited template files become new versions here; every worker's
        # next claim renders them (hub.templates).
        if imported := sync_files(url, settings.all_template_dirs):
            typer.echo(f"templates imported as new versions: {', '.join(imported)}")
        with session(url) as db:
            version, before = config.stored(db)
            changed = None if before is None else changes(before, now)
            if changed == []:
                typer.echo(f"nothing changed since settings version {version}; nothing reloaded")
                return
            version = config.bump(db, now)
    except SQLAlchemyError as exc:
        raise fail(f"store at {url}: {exc}", code=1) from None
    if changed is None:
        typer.echo("no earlier snapshot to compare with: recorded these settings")
    for change in changed or []:
        typer.echo(str(change))
    # Every process looks at the version once per interval: after it, each
    # one's next task or request runs the new settings.
    time.sleep(CHECK_INTERVAL_S + 0.1)
    typer.echo(f"reloaded: settings version {version}, applied by every running process")


def report_changes(settings: Settings) -> None:
    """For ``hub check``: what ``hub reload`` would apply, when a store with a snapshot exists."""
    found = _stored_changes(settings)
    if found is None:
        return
    version, changed = found
    if not changed:
        typer.echo(f"no changes since settings version {version}")
        return
    typer.echo(f"changed since settings version {version} (`hub reload` applies them):")
    for change in changed:
        typer.echo(str(change))


def _stored_changes(settings: Settings) -> tuple[int, list[Change]] | None:
    """The stored version and what changed since; None without a store or a snapshot."""
    from hub.store import config
    from hub.store.db import session

    url = settings.resolved_database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None  # `hub check` must not create a store
    try:
        with session(url) as db:
            version, before = config.stored(db)
    except SQLAlchemyError:
        return None  # unreachable or not migrated yet: nothing to compare with
    if before is None:
        return None
    return version, changes(before, snapshot(settings, settings.all_template_dirs))
