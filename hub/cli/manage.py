"""Day-to-day commands: publish, keys, dead letters, outbox, templates, recipients, topics.

And subscriptions: list them all, add and remove those kept in the store.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.channels import CHANNELS
from hub.cli.common import fail, json_option, settings_or_fail
from hub.errors import (
    BrokerUnavailable,
    ConfigError,
    EventError,
    InputError,
    InvalidFilter,
    TemplateError,
)
from hub.settings import Subscription, parse_duration

if TYPE_CHECKING:
    from hub.recipients import RecipientError

keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_cli = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
notifications_cli = typer.Typer(help="Find and resend dead letters.", no_args_is_help=True)
templates_cli = typer.Typer(help="Sync and preview templates.", no_args_is_help=True)
recipients_cli = typer.Typer(help="Store recipients.", no_args_is_help=True)
topics_cli = typer.Typer(help="Manage topics' members.", no_args_is_help=True)
subscriptions_cli = typer.Typer(
    help="List subscriptions; add and remove those kept in the store.", no_args_is_help=True
)


def publish(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="Event type")],
    data: Annotated[str, typer.Option(help="Event data as JSON, or @file.json")] = "{}",
    id: Annotated[str | None, typer.Option(help="Idempotency key")] = None,
    deliver_at: Annotated[
        datetime | None,
        typer.Option(
            help="Hold its notifications until then (ISO 8601 with an offset)",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S"],
        ),
    ] = None,
    cancellation_key: Annotated[
        str | None, typer.Option(help="A key `hub cancel` can stop it with")
    ] = None,
) -> None:
    """Publish an event (the same path as POST /v1/events)."""
    from hub import events

    settings_or_fail()
    payload = json_option("--data", data)
    to = events.Envelope(deliver_at=deliver_at, cancellation_key=cancellation_key)
    try:
        accepted = events.publish(event_type, payload, id, to=to)
    except EventError as exc:
        details = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors)
        raise fail(f"{exc}\n{details}") from None
    except (BrokerUnavailable, ConfigError) as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(
        json.dumps({"id": accepted.id, "status": "accepted", "duplicate": accepted.duplicate})
    )


def cancel(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The events' cancellation_key")],
) -> None:
    """Stop what the events published with KEY have not sent yet (as POST /v1/cancel)."""
    from hub import completion, events
    from hub.store import schedule
    from hub.store.db import session

    with session(_migrated_store()) as db:
        done = schedule.cancel(db, key, lambda event_type: True)
        completed = completion.complete(db, settings_or_fail(), done.rows)
    completion.announce(events.publish, completed)
    typer.echo(json.dumps({"events": done.events, "cancelled": done.notifications}))


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: admin, read or publish:<glob> (e.g. publish:user.*); "
            "without it, publish:* and read"
        ),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d or 12h")] = None,
    allow_ip: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable: a network the key may be used from, e.g. 10.0.0.0/8"),
    ] = None,
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from hub import keys

    try:
        expires_in_s = None if expires is None else parse_duration(expires, "--expires")
    except ValueError as exc:
        raise fail(str(exc)) from None
    url = _migrated_store()
    try:
        key = keys.create_key(
            url,
            name,
            scope or keys.DEFAULT_SCOPES,
            expires_in_s=expires_in_s,
            networks=allow_ip or (),
        )
    except InputError as exc:
        raise fail(str(exc)) from None
    typer.echo(key)
    typer.echo(f"API key {name!r} created; store it now, it is not shown again.", err=True)


@keys_cli.command("list")
def keys_list() -> None:
    """Every key with its scopes, creation, expiry and revocation; never the key itself."""
    from hub import keys

    rows = [("NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED", "NETWORKS")]
    for key in keys.list_keys(_migrated_store()):
        networks = "any" if key.networks is None else ",".join(map(str, key.networks))
        times = (_moment(key.created_at), _moment(key.expires_at), _moment(key.revoked_at))
        rows.append((key.name, ",".join(key.scopes), *times, networks))
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys_cli.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key; every API process refuses it within 5 seconds."""
    from hub import keys

    try:
        keys.revoke_key(_migrated_store(), name)
    except InputError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"API key {name!r} revoked.", err=True)


@keys_cli.command("rotate")
def keys_rotate(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key and print its successor once: same name, scopes and lifetime."""
    from hub import keys

    try:
        key = keys.rotate_key(_migrated_store(), name)
    except InputError as exc:
        raise fail(str(exc)) from None
    typer.echo(key)
    typer.echo(
        f"API key {name!r} rotated: the old key is revoked; store the new one now, "
        "it is not shown again.",
        err=True,
    )


def _migrated_store() -> str:
    """The store's URL, its schema brought up to date (keys are often made before `hub up`)."""
    from hub.store.db import migrate

    url = settings_or_fail().resolved_database_url
    migrate(url)
    return url


def _moment(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@notifications_cli.command("list")
def notifications_list(
    status: Annotated[list[str], typer.Option(help="Repeatable: failed, unknown, ...")] = [],  # noqa: B006
    channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
    since: Annotated[str | None, typer.Option(help="1h, 30m, 2d or ISO 8601")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
) -> None:
    """List notifications, newest first."""
    from hub import notifications

    settings = settings_or_fail()
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
    settings = settings_or_fail()
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


def _before(value: str, option: str) -> datetime:
    """``"30d"`` ago, or an ISO 8601 time (UTC when it has no offset)."""
    from hub.store.db import seconds_ago

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            return seconds_ago(parse_duration(value, option))
        except ValueError as exc:
            raise fail(f"{exc} (or an ISO 8601 time)") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def purge(
    before: Annotated[
        str,
        typer.Option(help="30d, 12h or an ISO 8601 time: finished rows older than this go"),
    ],
    attempts_before: Annotated[
        str | None,
        typer.Option(help="Attempts of final notifications older than this (default: --before)"),
    ] = None,
    batch: Annotated[int, typer.Option(help="Rows per transaction (default: retention.batch)")] = 0,
) -> None:
    """Delete finished events, their notifications and attempts, as beat does (retention.*).

    Nothing in flight, nothing an alert group names, and no opt-out,
    recipient, topic, subscription or template is ever deleted.
    """
    from hub.store.retention import purge as purge_rows

    settings = settings_or_fail()
    if batch < 0:
        raise fail("--batch: must be at least 1")
    url = _migrated_store()
    events_before = _before(before, "--before")
    counts = purge_rows(
        url,
        events_before=events_before,
        attempts_before=_before(attempts_before, "--attempts-before")
        if attempts_before
        else events_before,
        batch=batch or settings.retention.batch,
    )
    typer.echo(
        f"purged {counts['events']} events, {counts['notifications']} notifications, "
        f"{counts['attempts']} attempts"
    )


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply the store's migrations."""
    from hub.store.db import migrate

    settings = settings_or_fail()
    migrate(settings.resolved_database_url)
    typer.echo(f"store at {settings.resolved_database_url} is up to date")


def outbox(
    channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
    last: Annotated[int, typer.Option(help="How many, newest first")] = 10,
    show: Annotated[bool, typer.Option("--show", help="Print the newest one whole")] = False,
) -> None:
    """What the channels without a provider wrote to var/outbox/ instead of sending."""
    settings = settings_or_fail()
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


@templates_cli.command("sync")
def templates_sync() -> None:
    """Import the template files into the store, a new version only where a file changed."""
    from hub.templates import sync_files

    settings = settings_or_fail()
    try:
        imported = sync_files(settings.resolved_database_url, settings.all_template_dirs)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"imported: {', '.join(imported)}" if imported else "every template is up to date")


@templates_cli.command("preview")
def templates_preview(
    name: Annotated[str, typer.Argument(help="Template name, e.g. user.registered")],
    channel: Annotated[str, typer.Option(help=f"One of: {', '.join(CHANNELS)}")] = "email",
    data: Annotated[
        str | None, typer.Option(help="Sample event data as JSON, or @file.json")
    ] = None,
    event_type: Annotated[str, typer.Option(help="Default: the template's event type")] = "",
    locale: Annotated[str | None, typer.Option(help="e.g. fr-CA")] = None,
) -> None:
    """Render a stored template's active version as a channel would send it (SMS: segments)."""
    from hub.store.db import session
    from hub.template_editing import event_type_of, preview
    from hub.templates import Library

    settings = settings_or_fail()
    known = settings.channel_classes
    if channel not in known:
        raise fail(f"--channel: unknown channel {channel!r}; known: {', '.join(known)}")
    payload = json_option("--data", data) if data is not None else None
    with session(settings.resolved_database_url) as db:
        current = Library().load(db)
    kind = event_type or event_type_of(settings, current.resolve(name) or name, None)
    try:
        rendered, details = preview(current, settings, name, channel, payload, kind, locale)
    except TemplateError as exc:
        raise fail(str(exc)) from None
    if rendered.subject is not None:
        typer.echo(f"Subject: {rendered.subject}\n")
    typer.echo(rendered.text)
    if rendered.html is not None:
        typer.echo(f"\n--- body.html ---\n{rendered.html}")
    if details:
        typer.echo("\n--- " + ", ".join(f"{k}: {v}" for k, v in details.items()))


@recipients_cli.command("import")
def recipients_import(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="FILE.csv (header row) or FILE.jsonl")
    ],
) -> None:
    """Create or merge recipients from a file; each bad line is reported as FILE:LINE.

    The good lines are stored even when others are bad (then the exit code is 2).
    In a CSV an empty cell keeps its field, and data/preferences hold JSON.
    """
    from hub import recipients

    _migrated_store()
    try:
        report = recipients.import_file(file)
    except OSError as exc:
        raise fail(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail(f"{file}: not UTF-8 text") from None
    for line, message in report.errors:
        typer.echo(f"{file}:{line}: {message}", err=True)
    bad_lines = len({line for line, _ in report.errors})
    summary = f"imported {report.imported} recipient(s)"
    if bad_lines:
        raise fail(f"{summary}; {bad_lines} line(s) with errors were skipped")
    typer.echo(summary, err=True)


@topics_cli.command("add")
def topics_add(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The topic, e.g. oncall")],
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Recipient ids")],
) -> None:
    """Add stored recipients to a topic (members already in it stay as they are)."""
    from hub import recipients

    _migrated_store()
    try:
        added = recipients.add_to_topic(key, ids)
    except recipients.RecipientError as exc:
        raise fail(_topic_problems(exc, ids)) from None
    typer.echo(f"added {added} member(s) to topic {key!r}", err=True)


@topics_cli.command("remove")
def topics_remove(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The topic")],
    id: Annotated[str, typer.Argument(metavar="ID", help="A recipient id")],
) -> None:
    """Take one recipient out of a topic."""
    from hub import recipients

    _migrated_store()
    if not recipients.remove_from_topic(key, id):
        raise fail(f"{id!r} is not a member of topic {key!r}")
    typer.echo(f"removed {id!r} from topic {key!r}", err=True)


@topics_cli.command("list")
def topics_list(key: Annotated[str, typer.Argument(metavar="KEY", help="The topic")]) -> None:
    """A topic's members' ids, one a line, oldest member first."""
    from hub import recipients

    _migrated_store()
    listed = 0
    after = None
    while True:
        page, after = recipients.topic_page(key, after, 1000)
        for member in page:
            typer.echo(member.recipient_id)
        listed += len(page)
        if after is None:
            break
    typer.echo(f"{listed} member(s) in topic {key!r}", err=True)


def _topic_problems(exc: RecipientError, ids: list[str]) -> str:
    """What is wrong with ``hub topics add``'s arguments, naming each bad id."""
    lines = []
    for error in exc.errors:
        match error["loc"]:
            case ["recipients", int(index), *_]:
                lines.append(f"{ids[index]!r}: {error['msg']}")
            case ["topic", *_]:
                lines.append(f"KEY: {error['msg']}")
            case _:
                lines.append(str(error["msg"]))
    return "; ".join(lines)


@subscriptions_cli.command("list")
def subscriptions_list() -> None:
    """Every subscription: the settings file's (read-only), then the store's (API and CLI)."""
    from hub.store import subscriptions as stored
    from hub.store.db import session

    settings = settings_or_fail()
    with session(_migrated_store()) as db:
        kept = stored.definitions(db)
    rows = [["NAME", "SOURCE", "EVENT", "CHANNEL", "TEMPLATE", "TO", "FILTER"]]
    listed = [(s.name, "settings", s.model_dump(mode="json")) for s in settings.subscriptions]
    listed += [(name, "api", definition) for name, definition in kept]
    for name, source, definition in listed:
        filter_ = definition.get("filter")
        shown = "-" if filter_ is None else json.dumps(filter_, separators=(",", ":"))
        fields = [str(definition.get(key) or "-") for key in ("event", "channel", "template", "to")]
        rows.append([name, source, *fields, shown])
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@subscriptions_cli.command("add")
def subscriptions_add(
    file: Annotated[
        str | None,
        typer.Option("--file", help="A subscription as JSON, as POST /v1/subscriptions takes"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Its unique name")] = None,
    event: Annotated[str | None, typer.Option(help="An event type, or a glob like task.*")] = None,
    channel: Annotated[str | None, typer.Option(help="A channel, or alert")] = None,
    template: Annotated[str | None, typer.Option(help="Template folder")] = None,
    to: Annotated[
        str | None, typer.Option(help="Recipient expression, e.g. {{ data.email }}")
    ] = None,
    when: Annotated[str | None, typer.Option(help="Jinja condition")] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help='JSON condition, e.g. {"data.plan": {"in": ["pro"]}}'),
    ] = None,
    category: Annotated[str | None, typer.Option(help="Category people can opt out of")] = None,
    priority: Annotated[str | None, typer.Option(help="critical, high, normal or low")] = None,
    ttl: Annotated[str | None, typer.Option(help="Not worth sending after, e.g. 10m")] = None,
    delay: Annotated[str | None, typer.Option(help="e.g. 10m (stored; acted on later)")] = None,
    digest: Annotated[str | None, typer.Option(help="e.g. 1h (stored; acted on later)")] = None,
) -> None:
    """Add a subscription to the store; every worker routes its next event with it.

    Flags add to --file, or replace its fields.
    """
    from sqlalchemy.exc import IntegrityError

    from hub.routing import stored_definition
    from hub.store import subscriptions as stored
    from hub.store.db import session

    definition = json_option("--file", f"@{file}") if file else {}
    if not isinstance(definition, dict):
        raise fail(f"--file: {file} holds no JSON object")
    flags = {
        "name": name,
        "event": event,
        "channel": channel,
        "template": template,
        "to": to,
        "when": when,
        "filter": None if filter_ is None else json_option("--filter", filter_),
        "category": category,
        "priority": priority,
        "ttl": ttl,
        "delay": delay,
        "digest": digest,
    }
    definition.update({key: value for key, value in flags.items() if value is not None})
    subscription = _subscription_or_fail(definition)
    try:
        with session(_migrated_store()) as db:
            stored.add(db, subscription.name, stored_definition(subscription))
    except IntegrityError:
        raise fail(f"a subscription named {subscription.name!r} exists") from None
    typer.echo(f"subscription {subscription.name!r} added", err=True)


@subscriptions_cli.command("remove")
def subscriptions_remove(
    name: Annotated[str, typer.Argument(help="The subscription's name")],
) -> None:
    """Remove a subscription from the store; every worker routes its next event without it."""
    from hub.store import subscriptions as stored
    from hub.store.db import session

    if name in {subscription.name for subscription in settings_or_fail().subscriptions}:
        raise fail(f"subscription {name!r} comes from the settings file: change it there")
    with session(_migrated_store()) as db:
        removed = stored.remove(db, name)
    if not removed:
        raise fail(f"no subscription named {name!r} in the store")
    typer.echo(f"subscription {name!r} removed", err=True)


def _subscription_or_fail(definition: dict[str, Any]) -> Subscription:
    """``definition`` as a subscription the store may keep, or exit naming each bad field."""
    from pydantic import ValidationError

    from hub.routing import subscription_errors
    from hub.store.db import session
    from hub.templates import Library, Templates

    try:
        subscription = Subscription.model_validate(definition)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    else:
        settings = settings_or_fail()
        if subscription.name in {s.name for s in settings.subscriptions}:
            raise fail(f"subscription {subscription.name!r} comes from the settings file")
        with session(settings.resolved_database_url) as db:
            current = Library().load(db)
        errors = subscription_errors(subscription, settings, Templates(), current.variants)
    if errors:
        raise fail("\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
    return subscription
