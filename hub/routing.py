"""Routing: which notifications an event produces, from the subscriptions in settings.

Pure logic over the event's data: no broker, no provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.settings import Subscription
from hub.store import repository
from hub.store.db import session
from hub.store.repository import NewNotification, notification_id
from hub.templates import Templates


def context_for(event_id: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What templates, recipient expressions and conditions can refer to."""
    return {"event": {"id": event_id, "type": event_type}, "data": data}


def plan(
    event_id: str,
    event_type: str,
    data: dict[str, Any],
    subscriptions: Sequence[Subscription],
    templates: Templates,
) -> list[NewNotification]:
    """The notifications ``event`` must produce: one per matching subscription and recipient.

    A subscription whose ``when`` is false, or whose recipient renders empty,
    produces nothing. Recipients may be a comma-separated list.
    """
    context = context_for(event_id, event_type, data)
    planned: dict[str, NewNotification] = {}
    for subscription in subscriptions:
        if subscription.event != event_type:
            continue
        if subscription.when and not templates.condition(subscription.when, context):
            continue
        rendered = templates.expression(subscription.to, context)
        for recipient in filter(None, (r.strip() for r in rendered.split(","))):
            nid = notification_id(event_id, subscription.name, recipient)
            planned[nid] = NewNotification(
                id=nid,
                event_id=event_id,
                subscription=subscription.name,
                channel=subscription.channel,
                recipient=recipient,
                template=subscription.template,
            )
    return list(planned.values())


def route_event(
    database_url: str,
    subscriptions: Sequence[Subscription],
    templates: Templates,
    event_id: str,
) -> list[tuple[str, str]]:
    """Store the notifications of a stored event; ``(id, channel)`` of those to enqueue.

    Safe to repeat: notification ids are deterministic, so a redelivered
    routing task finds the rows it already made.
    """
    with session(database_url) as db:
        event = repository.get_event(db, event_id)
        if event is None:
            return []
        planned = plan(event.id, event.type, event.data, subscriptions, templates)
        return repository.add_notifications(db, event.id, planned)
