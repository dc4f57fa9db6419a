"""``hub alerts``: list, show, acknowledge and resolve failure alerts; silence them.

These work on the store directly, as the alerts API does (see
:mod:`hub.api.alert_routes`): no API process needs to run. Who acknowledged,
resolved or silenced is recorded as ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.cli.common import fail, settings_or_fail
from hub.settings import parse_duration

if TYPE_CHECKING:
    from hub.store.alert_queries import After, Change

alerts_cli = typer.Typer(
    help="Failure alerts: list, show, ack, resolve, silence.", no_args_is_help=True
)

STATUSES = ("firing", "acknowledged", "resolved", "silenced")
_PAGE = 1000


def _store() -> str:
    """The store's URL, its schema brought up to date."""
    from hub.store.db import migrate

    url = settings_or_fail().resolved_database_url
    migrate(url)
    return url


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name, as in some containers
        return "cli"


def _moment(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _labels(labels: dict[str, Any]) -> str:
    return " ".join(f"{path}={json.dumps(value)}" for path, value in labels.items())


@alerts_cli.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(help=f"Only one of: {', '.join(STATUSES)}")] = None,
    subscription: Annotated[str | None, typer.Option(help="Only this subscription's")] = None,
) -> None:
    """Alert groups, oldest first: id, status, count, last seen, subscription, labels."""
    from hub.store import alert_queries as queries
    from hub.store.db import session

    if status is not None and status not in STATUSES:
        raise fail(f"--status: {status!r} is none of {', '.join(STATUSES)}")
    url = _store()
    listed = 0
    after: After | None = None
    while True:
        with session(url) as db:
            page = queries.alert_page(db, after, _PAGE, status, subscription)
        for row in page:
            typer.echo(
                f"{row.id}  {row.status:<12} {row.count:>6}  {_moment(row.last_seen)}  "
                f"{row.subscription}  {_labels(row.labels)}"
            )
        listed += len(page)
        if len(page) < _PAGE:
            break
        after = (page[-1].created_at, page[-1].id)
    typer.echo(f"{listed} alert(s)", err=True)


@alerts_cli.command("show")
def alerts_show(
    id: Annotated[str, typer.Argument(metavar="ID", help="An alert id, alr_...")],
) -> None:
    """An alert and its history: its events, and the notifications sent for it with attempts."""
    from hub.store import alert_queries as queries
    from hub.store.db import session

    with session(_store()) as db:
        row = queries.alert(db, id)
        if row is None:
            raise fail(f"no alert {id!r}")
        history = queries.history(db, id)
    for name, value in (
        ("id", row.id),
        ("subscription", row.subscription),
        ("status", row.status),
        ("count", row.count),
        ("labels", _labels(row.labels)),
        ("first_seen", _moment(row.first_seen)),
        ("last_seen", _moment(row.last_seen)),
        ("acknowledged", f"{_moment(row.acknowledged_at)} by {row.acknowledged_by or '-'}"),
        ("resolved", f"{_moment(row.resolved_at)} by {row.resolved_by or '-'}"),
        ("silence_id", row.silence_id or "-"),
        ("notifications_sent", row.notifications_sent),
        ("escalation_step", row.escalation_step),
    ):
        typer.echo(f"{name + ':':<20}{value}")
    for message in row.messages:
        typer.echo(f"{'message:':<20}{message}")
    typer.echo(f"\nevents ({len(history.events)}):")
    for event in history.events:
        typer.echo(f"  {_moment(event.at)}  {event.id}  {event.type}")
    attempts: dict[str, int] = {}
    for attempt in history.attempts:
        attempts[attempt.notification_id] = attempts.get(attempt.notification_id, 0) + 1
    typer.echo(f"\nnotifications ({len(history.notifications)}):")
    for n in history.notifications:
        typer.echo(
            f"  {_moment(n.created_at)}  {n.id}  {n.status:<11} {n.channel:<8} {n.recipient}  "
            f"attempts={attempts.get(n.id, 0)}  {n.last_error or ''}".rstrip()
        )


@alerts_cli.command("ack")
def alerts_ack(id: Annotated[str, typer.Argument(metavar="ID", help="An alert id")]) -> None:
    """Acknowledge a firing alert: its repeats and escalation stop."""
    from hub.store import alert_queries as queries
    from hub.store.db import session
    from hub.store.models import utcnow

    with session(_store()) as db:
        change = queries.acknowledge(db, id, _who(), utcnow())
    _report(change, id, "acknowledged")


@alerts_cli.command("resolve")
def alerts_resolve(id: Annotated[str, typer.Argument(metavar="ID", help="An alert id")]) -> None:
    """Resolve an alert by hand; one that notified sends its "resolved" notification."""
    from hub.store import alert_queries as queries
    from hub.store.db import session
    from hub.store.models import utcnow

    with session(_store()) as db:
        change = queries.resolve(db, id, _who(), utcnow())
    _report(change, id, "resolved")


def _report(change: Change, id: str, done: str) -> None:
    """Say what an ack or resolve did; exit 2 for an unknown id, 1 when refused."""
    if change.alert is None:
        raise fail(f"no alert {id!r}")
    if change.refusal is not None:
        raise fail(change.refusal, 1)
    typer.echo(f"alert {id!r} {done}", err=True)


@alerts_cli.command("silence")
def alerts_silence(
    match: Annotated[
        list[str],
        typer.Option(help="PATH=VALUE, repeatable, all must hold: data.service=billing"),
    ],
    for_: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d")],
    comment: Annotated[str, typer.Option(help="Why, for whoever reads it later")] = "",
) -> None:
    """Silence alerts whose events match: new groups are recorded as silenced and send nothing.

    Values are strings; POST /v1/silences takes other JSON values and filter operators.
    Prints the silence's id.
    """
    from hub.store import alert_queries as queries
    from hub.store.db import session
    from hub.store.models import utcnow

    matchers: dict[str, Any] = {}
    for given in match:
        path, equals, value = given.partition("=")
        if not equals or not path:
            raise fail(f"--match: {given!r} is not PATH=VALUE, e.g. data.service=billing")
        matchers[path] = value
    try:
        seconds = parse_duration(for_, "--for")
    except ValueError as exc:
        raise fail(str(exc)) from None
    now = utcnow()
    ends_at = now + timedelta(seconds=seconds)
    if problems := queries.silence_problems(matchers, now, ends_at, now):
        flags = {"matchers": "--match", "ends_at": "--for"}
        raise fail(
            "\n".join(f"{flags.get(p['loc'][0], p['loc'][0])}: {p['msg']}" for p in problems)
        )
    with session(_store()) as db:
        silence = queries.add_silence(db, matchers, now, ends_at, comment, _who(), now)
    typer.echo(silence.id)
    typer.echo(f"silenced {_labels(matchers)} until {_moment(ends_at)}", err=True)


@alerts_cli.command("silences")
def alerts_silences(
    all_: Annotated[bool, typer.Option("--all", help="Ended and future ones too")] = False,
) -> None:
    """Silences in force (with --all: every one, oldest first): id, until, matchers, comment."""
    from hub.store import alert_queries as queries
    from hub.store.db import session
    from hub.store.models import utcnow

    url, now = _store(), utcnow()
    after: After | None = None
    while True:
        with session(url) as db:
            page = queries.silence_page(db, after, _PAGE, None if all_ else now)
        for silence in page:
            state = "active" if silence.active(now) else "inactive"
            typer.echo(
                f"{silence.id}  {state:<8} until {_moment(silence.ends_at)}  "
                f"{_labels(silence.matchers)}  {silence.comment}".rstrip()
            )
        if len(page) < _PAGE:
            break
        after = (page[-1].created_at, page[-1].id)


@alerts_cli.command("unsilence")
def alerts_unsilence(
    id: Annotated[str, typer.Argument(metavar="ID", help="A silence id, sil_...")],
) -> None:
    """End a silence now; it stays listed with --all."""
    from hub.store import alert_queries as queries
    from hub.store.db import session
    from hub.store.models import utcnow

    with session(_store()) as db:
        if not queries.end_silence(db, id, utcnow()):
            raise fail(f"no silence {id!r}")
    typer.echo(f"silence {id!r} ended", err=True)
