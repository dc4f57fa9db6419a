"""Routing: which notifications an event produces, from the subscriptions in settings.

Pure logic over the event's data: no broker, no provider. Routing does not
judge addresses (it knows no channel's rules): a ``to`` renders one recipient,
and delivery fails it as ``invalid_address`` if it is none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jinja2
from sqlalchemy.orm import Session

from hub.errors import ConfigError, TemplateError
from hub.settings import ALERT, Settings, Subscription
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.models import Notification
from hub.store.notifications import NewNotification, notification_id
from hub.templates import Templates, context_for

log = logging.getLogger(__name__)

# The widest recipient every store accepts (the column is a String(n));
# longer than any address or phone number.
MAX_RECIPIENT_CHARS: int = Notification.__table__.c.recipient.type.length  # type: ignore[attr-defined]


def check_subscriptions(settings: Settings, templates: Templates) -> None:
    """Fail at start-up on a subscription to an unknown event or with a broken expression."""
    for index, subscription in enumerate(settings.subscriptions):
        where = f"subscriptions[{index}] ({subscription.name!r})"
        if subscription.event not in settings.events:
            raise ConfigError(f"{where}.event: {subscription.event!r} is not in the event catalog")
        try:
            templates.env.from_string(subscription.to)
            if subscription.when:
                templates.env.compile_expression(subscription.when)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc


def plan(
    event_id: str,
    event_type: str,
    data: dict[str, Any],
    subscriptions: Sequence[Subscription],
    templates: Templates,
    alert_targets: Sequence[str],
) -> list[NewNotification]:
    """The notifications ``event`` must produce: one per subscription and channel.

    A subscription whose ``when`` is false, or whose recipient renders empty,
    produces nothing. Its ``to`` names one recipient: a rendered list (commas,
    semicolons, spaces) is kept whole, never fanned out, and fails delivery as
    an invalid address. One too long to store is cut to
    :data:`MAX_RECIPIENT_CHARS`, which no address reaches, so it fails the same
    way instead of failing the event's routing. The channel ``alert`` stands
    for every target in ``alert_targets``.
    """
    context = context_for(event_id, event_type, data)
    planned: dict[str, NewNotification] = {}
    for subscription in subscriptions:
        if subscription.event != event_type:
            continue
        try:
            if subscription.when and not templates.condition(subscription.when, context):
                continue
            rendered = templates.expression(subscription.to, context)
        except TemplateError as exc:
            # One broken subscription must not hold back the event's others.
            log.error("subscription %r skipped for event %s: %s", subscription.name, event_id, exc)
            continue
        if not rendered:
            continue
        recipient = rendered[:MAX_RECIPIENT_CHARS]
        channels = alert_targets if subscription.channel == ALERT else [subscription.channel]
        for channel in channels:
            nid = notification_id(event_id, subscription.name, channel, recipient)
            planned[nid] = NewNotification(
                id=nid,
                event_id=event_id,
                subscription=subscription.name,
                channel=channel,
                recipient=recipient,
                template=subscription.template,
                ttl_s=subscription.ttl_s,
            )
    return list(planned.values())


def route_events(
    db: Session, settings: Settings, templates: Templates, event_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """Store the notifications of stored events in ``db``; ``(id, channel)`` of those to deliver.

    Safe to repeat: notification ids are deterministic, so a redelivered
    routing task finds the rows it already made.
    """
    stored = stored_events.events_by_id(db, event_ids)
    routed = [stored[event_id] for event_id in event_ids if event_id in stored]
    planned = [
        notification
        for event in routed
        for notification in plan(
            event.id,
            event.type,
            event.data,
            settings.subscriptions,
            templates,
            settings.channels.alert_targets,
        )
    ]
    return stored_notifications.add_notifications(db, [event.id for event in routed], planned)
