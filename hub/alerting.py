"""Alert ticks: what alert groups have due, turned into notifications (beat, every alerts.tick_s).

On each tick, in one transaction: groups quiet for their subscription's
``resolve_after`` are resolved; silenced groups whose silence ended fire
again; each group whose next notification is due sends it (the first after
``group_wait``, news after ``group_interval``, a repeat after
``repeat_interval``, one "resolved" after a resolve); each firing group whose
next escalation step is due pages that step's recipients. Every one of these
moves the group's row first (:mod:`hub.store.alerts`), so a second beat, or a
tick redelivered after a worker died, finds nothing left to do, and the
notifications it makes have ids fixed by group, step and recipient.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from hub import addressing, alerts
from hub.routing import Route, Routes, plan, router
from hub.settings import Settings, Subscription
from hub.settings.units import parse_duration
from hub.store import alerts as stored_alerts
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.models import AlertStatus
from hub.store.notifications import NewNotification, Queued, notification_id
from hub.templates import Templates

log = logging.getLogger(__name__)


def tick(db: Session, settings: Settings, templates: Templates, now: datetime) -> list[Queued]:
    """Take every alert group's due step in ``db``; the notifications to deliver."""
    routes = router(settings, templates).routes(db)
    grouped = [route.subscription for route in _grouped(routes)]
    for subscription in grouped:
        if subscription.resolve_after is not None:
            quiet_s = subscription.seconds("resolve_after", 0)
            before = now - timedelta(seconds=quiet_s)
            for group in stored_alerts.quiet_since(db, subscription.name, before):
                stored_alerts.resolve(db, group.id, "resolve_after", now)
    silences = {silence for silence, _ in stored_alerts.active_silences(db, now)}
    stored_alerts.unsilence_ended(db, now, lambda silence: silence in silences)
    new: list[NewNotification] = []
    for group in stored_alerts.due_notifications(db, now):
        new += _notify(db, settings, templates, routes, group, now)
    escalating = [s.name for s in grouped if s.escalation]
    for group in stored_alerts.escalating(db, escalating) if escalating else ():
        new += _escalate(db, settings, templates, routes, group, now)
    return stored_notifications.add_alert_notifications(db, new)


def _grouped(routes: Routes) -> list[Route]:
    return [route for route in routes.all() if route.subscription.grouped]


def _notify(
    db: Session,
    settings: Settings,
    templates: Templates,
    routes: Routes,
    group: stored_alerts.Group,
    now: datetime,
) -> list[NewNotification]:
    """The group's due notification, once this tick took it."""
    route = routes.named(group.subscription)
    resolved = group.status == AlertStatus.RESOLVED
    if route is None or resolved:
        next_at = None  # announced once; a group whose subscription is gone stops
    else:
        _, _, repeat_s = alerts.timing(route.subscription)
        next_at = now + timedelta(seconds=repeat_s)
    if not stored_alerts.take_notification(db, group, now, next_at) or route is None:
        return []
    kind = "resolved" if resolved else f"n{group.notifications_sent}"
    return _addressed(db, settings, templates, route.subscription, group, kind)


def _escalate(
    db: Session,
    settings: Settings,
    templates: Templates,
    routes: Routes,
    group: stored_alerts.Group,
    now: datetime,
) -> list[NewNotification]:
    """The group's next escalation step, if its time came and this tick took it."""
    route = routes.named(group.subscription)
    if route is None or group.first_notified_at is None:
        return []
    steps = route.subscription.escalation
    if group.escalation_step >= len(steps):
        return []
    step = steps[group.escalation_step]
    due = group.first_notified_at + timedelta(
        seconds=parse_duration(step.after, "after", positive=False)
    )
    if due > now or not stored_alerts.take_step(db, group, now):
        return []
    to = step.to or route.subscription.to
    paging = route.subscription.model_copy(update={"channel": step.channel, "to": to})
    log.warning(
        "alert %s escalated to step %d: %s %s",
        group.id,
        group.escalation_step,
        step.channel,
        step.to,
    )
    return _addressed(db, settings, templates, paging, group, f"step{group.escalation_step}")


def _addressed(
    db: Session,
    settings: Settings,
    templates: Templates,
    subscription: Subscription,
    group: stored_alerts.Group,
    kind: str,
) -> list[NewNotification]:
    """The subscription's notifications for ``group``, as routing addresses them.

    They render the group's first event's data (and ``alert``); their ids
    are fixed by group, ``kind`` (which notification or step) and recipient.
    """
    event = stored_events.events_by_id(db, [group.first_event_id]).get(group.first_event_id)
    if event is None:
        return []
    # Its filter and `when` held for the group's events; what is sent now is the group.
    bare = subscription.model_copy(
        update={"when": "", "filter": None, "delay": None, "digest": None}
    )
    planned = plan(
        event.id,
        event.type,
        event.data,
        [Route(bare, None)],
        templates,
        settings.channels.alert_targets,
        resolve=lambda to: addressing.referenced(db, to),
    )
    return [
        replace(
            one,
            id=notification_id(
                group.id,
                subscription.name,
                one.channel,
                f"{kind}:{one.recipient_id or one.recipient}",
            ),
            alert_id=group.id,
        )
        for one in planned
    ]
