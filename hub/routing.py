"""Routing: which notifications an event produces, from the subscriptions of settings and store.

Logic over the event's data: no broker, no provider. Routing does not judge
addresses (it knows no channel's rules): a ``to`` renders one recipient, and
delivery fails it as ``invalid_address`` if it is none.

Subscriptions come from settings (read-only) and from the store (made through
the API or ``hub subscriptions add``). Each process keeps them compiled in a
:class:`Router`; before routing, it reads the store's subscriptions version
(one primary-key SELECT in the routing transaction) and reloads the stored
ones when it moved. So a change applies to the next event on every worker,
on any machine, with no restart and no signal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import jinja2
from pydantic import ValidationError
from sqlalchemy.orm import Session

from hub import addressing, alerts, completion, logs
from hub.errors import ConfigError, TemplateError
from hub.filters import Filter, parse_filter
from hub.scheduling import hold
from hub.settings import ALERT, Settings, Subscription
from hub.store import alerts as stored_alerts
from hub.store import digests
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store import subscriptions as stored_subscriptions
from hub.store.events import CompletedEvent, EventRow
from hub.store.models import Notification, NotificationStatus, utcnow
from hub.store.notifications import NewNotification, Queued, notification_id
from hub.store.recipients import RecipientRow
from hub.templates import Templates, context_for

log = logging.getLogger(__name__)

# The widest recipient every store accepts (the column is a String(n));
# longer than any address or phone number.
MAX_RECIPIENT_CHARS: int = Notification.__table__.c.recipient.type.length  # type: ignore[attr-defined]


# The variants a template has, by name; None when there is no such template.
TemplateVariants = Callable[[str], set[str] | None]


def is_glob(pattern: str) -> bool:
    """Whether a subscription's ``event`` is a glob (``task.*``) rather than one type."""
    return any(char in pattern for char in "*?[")


def subscription_errors(
    subscription: Subscription,
    settings: Settings,
    templates: Templates,
    variants_of: TemplateVariants,
) -> list[dict[str, Any]]:
    """What is wrong with ``subscription`` here, as ``{"loc", "msg", "type"}`` (FastAPI's shape).

    Its channel must exist; its event must be in the catalog, or as a glob
    match at least one type there (a glob matching none is a typo); its
    expressions must compile; its template must have the variant its channel
    renders (``variants_of`` says which a template has, None for no template).
    Its own fields (filter, durations) were checked when it was built.
    """
    errors = []
    known = [*settings.channel_classes, ALERT]
    if subscription.channel not in known:
        message = f"unknown channel {subscription.channel!r}; known: {', '.join(known)}"
        errors.append(_error("channel", message, "unknown_channel"))
    if problem := _event_problem(subscription.event, settings):
        errors.append(_error("event", problem, "unknown_event_type"))
    for field, source, compile_source in (
        ("to", subscription.to, templates.env.from_string),
        ("when", subscription.when, templates.env.compile_expression),
    ):
        try:
            if source:
                compile_source(source)
        except jinja2.TemplateSyntaxError as exc:
            errors.append(_error(field, exc.message or "invalid expression", "template_syntax"))
    if subscription.channel in known and (
        problem := _template_problem(subscription, settings, variants_of)
    ):
        errors.append(_error("template", problem, "unknown_template"))
    return errors


def check_subscriptions(
    settings: Settings, templates: Templates, variants_of: TemplateVariants
) -> None:
    """Fail at start-up on the first problem :func:`subscription_errors` finds in settings."""
    for index, subscription in enumerate(settings.subscriptions):
        for error in subscription_errors(subscription, settings, templates, variants_of):
            where = f"subscriptions[{index}] ({subscription.name!r})"
            raise ConfigError(f"{where}.{error['loc'][0]}: {error['msg']}")


def stored_definition(subscription: Subscription) -> dict[str, Any]:
    """What the store keeps of a subscription: the fields it was given, but its name.

    Defaults are left out, so a later hub's default applies to it too; the
    name is the row's key, added back when it is loaded.
    """
    return subscription.model_dump(mode="json", exclude_unset=True, exclude={"name"})


def _error(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": [field], "msg": message, "type": kind}


def _event_problem(event: str, settings: Settings) -> str | None:
    if not is_glob(event):
        return None if event in settings.events else f"{event!r} is not in the event catalog"
    if any(fnmatchcase(known, event) for known in settings.events):
        return None
    return f"{event!r} matches no event type in the catalog"


def _template_problem(
    subscription: Subscription, settings: Settings, variants_of: TemplateVariants
) -> str | None:
    """Why the template cannot serve the subscription's channel(s), or None."""
    name = subscription.template
    found = variants_of(name)
    if found is None:
        return f"no template named {name!r}"
    alert = subscription.channel == ALERT
    for channel in settings.channels.alert_targets if alert else [subscription.channel]:
        variant = settings.channel_classes[channel].variant
        if variant not in found:
            return f"template {name!r} has no {variant} variant, which {channel} needs"
    return None


@dataclass(frozen=True, slots=True)
class Route:
    """A subscription compiled for routing: its filter parsed once."""

    subscription: Subscription
    filter: Filter | None

    @classmethod
    def of(cls, subscription: Subscription) -> Route:
        spec = subscription.filter
        return cls(subscription, None if spec is None else parse_filter(spec))


class Routes:
    """Compiled subscriptions in order, and those each event type matches, worked out once."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._all = tuple(routes)
        # Bounded by the catalog: only events of known types are stored.
        self._by_type: dict[str, tuple[Route, ...]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def all(self) -> tuple[Route, ...]:
        """Every route, in order."""
        return self._all

    def matching(self, event_type: str) -> tuple[Route, ...]:
        """The routes whose ``event`` (a type or a glob) matches ``event_type``, in order."""
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(r for r in self._all if fnmatchcase(event_type, r.subscription.event))
            self._by_type[event_type] = found
        return found

    def resolving(self, event_type: str) -> tuple[Route, ...]:
        """The grouped routes whose ``resolve_on`` matches ``event_type`` (hub.alerts)."""
        return tuple(
            r
            for r in self._all
            if r.subscription.grouped
            and r.subscription.resolve_on
            and fnmatchcase(event_type, r.subscription.resolve_on)
        )

    def named(self, name: str) -> Route | None:
        """The route of the subscription called ``name``, if it is still there."""
        return next((r for r in self._all if r.subscription.name == name), None)


class Router:
    """One process's subscriptions: those of settings, then the store's at the version it read.

    A stored subscription this hub no longer accepts (saved by another
    version), or whose name a settings one took since, is left out with an
    error in the log; the rest route as usual.
    """

    def __init__(self, settings: Settings, templates: Templates) -> None:
        self.settings = settings
        self.templates = templates
        self._fixed = [Route.of(subscription) for subscription in settings.subscriptions]
        self._routes = Routes(self._fixed)
        self._version: int | None = None
        self._lock = threading.Lock()

    def routes(self, db: Session) -> Routes:
        """The routes to use in ``db``'s transaction, reloaded first if the version moved."""
        version = stored_subscriptions.version(db)
        if version != self._version:
            with self._lock:
                if version != self._version:
                    # Read after the version: a change committed in between
                    # is loaded again next time, never missed.
                    self._routes = Routes([*self._fixed, *self._stored(db)])
                    # Each process's first load is no news; a change is.
                    level = logging.DEBUG if self._version is None else logging.INFO
                    self._version = version
                    log.log(
                        level, "subscriptions at version %d: %d in all", version, len(self._routes)
                    )
        return self._routes

    def _stored(self, db: Session) -> list[Route]:
        taken = {route.subscription.name for route in self._fixed}
        routes = []
        for name, definition in stored_subscriptions.definitions(db):
            if name in taken:
                log.error("stored subscription %r skipped: settings define one of that name", name)
                continue
            try:
                subscription = Subscription.model_validate({**definition, "name": name})
            except ValidationError as exc:
                log.error("stored subscription %r skipped: %s", name, exc)
                continue
            if subscription.enabled:
                routes.append(Route.of(subscription))
        return routes


# The router of this process's runtime, found by its settings and templates:
# a runtime rebuilt with new ones (a reload) gets a new router.
_router: Router | None = None


def router(settings: Settings, templates: Templates) -> Router:
    """This process's :class:`Router` for ``settings`` and ``templates``."""
    global _router
    current = _router
    if current is None or current.settings is not settings or current.templates is not templates:
        current = _router = Router(settings, templates)
    return current


# The recipients a ``recipient:<id>`` or ``topic:<key>`` reference stands for.
Resolve = Callable[[str], Sequence[RecipientRow]]


@dataclass(frozen=True, slots=True)
class Timing:
    """When routing happens, and what of the event bears on when its notifications go out."""

    now: datetime
    deliver_at: datetime | None = None
    # POST /v1/cancel came first: everything is suppressed as cancelled.
    cancelled: bool = False


def plan(
    event_id: str,
    event_type: str,
    data: dict[str, Any],
    routes: Sequence[Route],
    templates: Templates,
    alert_targets: Sequence[str],
    named: Sequence[RecipientRow] = (),
    resolve: Resolve | None = None,
    timing: Timing | None = None,
) -> list[NewNotification]:
    """The notifications ``event`` must produce: one per matching route, channel and recipient.

    ``routes`` are those matching the event's type. One whose filter or
    ``when`` is false produces nothing. A route's ``to`` is an address
    expression, or a ``recipient:``/``topic:`` reference (expanded by
    ``resolve``); without one, the route sends to each of ``named``, the
    recipients the event names (none: nothing). A stored recipient the
    channel cannot reach, or who turned it off, gets a ``suppressed``
    notification with the reason (:mod:`hub.addressing`). An address
    expression names one recipient: a rendered list (commas, semicolons,
    spaces) is kept whole, never fanned out, and fails delivery as an invalid
    address; one too long to store is cut to :data:`MAX_RECIPIENT_CHARS`,
    which no address reaches. The channel ``alert`` stands for every target
    in ``alert_targets``. ``timing`` decides which must wait, as
    ``scheduled`` (:mod:`hub.scheduling`): the subscription's ``delay``, the
    event's ``deliver_at``, a stored recipient's quiet hours; a digest
    subscription's notifications wait for their window to close.
    """
    timing = timing or Timing(utcnow())
    context = context_for(event_id, event_type, data)
    event = {"type": event_type, "id": event_id, "data": data}
    planned: dict[str, NewNotification] = {}
    for route in routes:
        subscription = route.subscription
        try:
            if not applies(route, event, context, templates):
                continue
            if subscription.to and not addressing.is_reference(subscription.to):
                rendered = templates.expression(subscription.to, context)
                targets: Sequence[RecipientRow] = ()
            else:
                rendered = ""
                if subscription.to and resolve is not None:
                    targets = resolve(subscription.to)
                else:
                    targets = named
        except TemplateError as exc:
            # One broken subscription must not hold back the event's others.
            log.error(
                "subscription %r skipped for event %s: %s",
                subscription.name,
                event_id,
                exc,
                extra=logs.ids(event_id),
            )
            continue
        channels = alert_targets if subscription.channel == ALERT else [subscription.channel]
        for channel in channels:
            if rendered:
                recipient = rendered[:MAX_RECIPIENT_CHARS]
                nid = notification_id(event_id, subscription.name, channel, recipient)
                planned[nid] = _new(nid, event_id, subscription, channel, recipient, timing)
            for target in targets:
                reach = addressing.delivery(target, channel, subscription.category)
                # Keyed on the recipient, not the address: changing an address
                # between two routings of one event cannot send twice.
                key = f"{addressing.RECIPIENT_REF}{target.id}"
                nid = notification_id(event_id, subscription.name, channel, key)
                planned[nid] = _new(
                    nid,
                    event_id,
                    subscription,
                    channel,
                    reach.address[:MAX_RECIPIENT_CHARS],
                    timing,
                    target,
                    suppressed=reach.suppressed,
                )
    return list(planned.values())


def applies(
    route: Route, event: dict[str, Any], context: dict[str, Any], templates: Templates
) -> bool:
    """Whether the route's ``filter`` and ``when`` hold for ``event``; TemplateError if broken."""
    subscription = route.subscription
    if route.filter is not None and not route.filter.matches(event):
        return False
    return not subscription.when or templates.condition(subscription.when, context)


def _new(
    nid: str,
    event_id: str,
    subscription: Subscription,
    channel: str,
    recipient: str,
    timing: Timing,
    target: RecipientRow | None = None,
    suppressed: str | None = None,
) -> NewNotification:
    if timing.cancelled:
        suppressed = "cancelled: its cancellation_key was cancelled before routing"
    status, not_before = NotificationStatus.QUEUED, None
    reason = suppressed
    digest_s = subscription.digest_s
    if suppressed:
        status = NotificationStatus.SUPPRESSED
    elif held := hold(
        timing.now,
        # A digest's notifications wait with it for its window to close.
        delay_s=max(subscription.delay_s, digest_s or 0),
        deliver_at=timing.deliver_at,
        priority=subscription.priority,
        preferences=target.preferences if target else None,
        timezone=target.timezone if target else None,
    ):
        status, not_before, reason = NotificationStatus.SCHEDULED, held.until, held.reason
    return NewNotification(
        id=nid,
        event_id=event_id,
        subscription=subscription.name,
        channel=channel,
        recipient=recipient,
        template=subscription.template,
        ttl_s=subscription.ttl_s,
        recipient_id=target.id if target else None,
        status=status,
        reason=reason,
        priority=subscription.priority,
        category=subscription.category,
        not_before=not_before,
        digest_s=None if suppressed else digest_s,
    )


@dataclass(frozen=True, slots=True)
class Routed:
    """What routing stored: notifications to deliver or hold, events it completed at once."""

    # Each is to deliver now, or carries the time it is held until (``not_before``).
    queued: list[Queued]
    # Events of types with completion on whose notifications were all final at
    # once (suppressed), or that made none: to announce once committed.
    completed: list[CompletedEvent]


def route_events(
    db: Session, settings: Settings, templates: Templates, event_ids: Sequence[str]
) -> Routed:
    """Store the notifications of stored events in ``db`` (see :class:`Routed`).

    The subscriptions are this process's, brought
    up to the store's version in ``db``'s transaction first. Safe to repeat: notification ids are
    deterministic, so a redelivered routing task finds the rows it already made.
    """
    routes = router(settings, templates).routes(db)
    stored = stored_events.events_by_id(db, event_ids)
    routed = [stored[event_id] for event_id in event_ids if event_id in stored]
    references: dict[str, Sequence[RecipientRow]] = {}

    def resolve(to: str) -> Sequence[RecipientRow]:
        if to not in references:
            references[to] = addressing.referenced(db, to)
        return references[to]

    now = utcnow()
    planned: list[NewNotification] = []
    silences: list[tuple[str, dict[str, Any]]] | None = None
    for event in routed:
        matching = routes.matching(event.type)
        if not matching:
            # Accepted but heard by nobody: say so, or it looks like a lost event.
            log.warning(
                "event %s (%s) matches no subscription",
                event.id,
                event.type,
                extra=logs.ids(event.id),
            )
        grouped = [route for route in matching if route.subscription.grouped]
        if grouped:
            matching = tuple(route for route in matching if not route.subscription.grouped)
            if silences is None:
                silences = stored_alerts.active_silences(db, now)
            _fold_into_groups(db, grouped, event, templates, silences, now)
        for route in routes.resolving(event.type):
            _resolve_groups(db, route, event, now)
        named = (
            addressing.recipients_of(db, event.recipients, event.topics)
            if event.recipients or event.topics
            else ()
        )
        planned += plan(
            event.id,
            event.type,
            event.data,
            matching,
            templates,
            settings.channels.alert_targets,
            named,
            resolve,
            Timing(now, event.deliver_at, event.cancelled),
        )
    members = [one for one in planned if one.digest_s is not None]
    if members:
        planned = [one for one in planned if one.digest_s is None]
        planned += digests.fold(db, members, now)
    queued = stored_notifications.add_notifications(db, [event.id for event in routed], planned)
    return Routed(queued, completion.complete_routed(db, settings, routed, planned))


def _fold_into_groups(
    db: Session,
    grouped: Sequence[Route],
    event: EventRow,
    templates: Templates,
    silences: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> None:
    """Fold ``event`` into the alert group of each grouped route it applies to (hub.alerts)."""
    as_event = {"type": event.type, "id": event.id, "data": event.data}
    context = context_for(event.id, event.type, event.data)
    for route in grouped:
        subscription = route.subscription
        try:
            if not applies(route, as_event, context, templates):
                continue
        except TemplateError as exc:
            log.error(
                "subscription %r skipped for event %s: %s",
                subscription.name,
                event.id,
                exc,
                extra=logs.ids(event.id),
            )
            continue
        if stored_alerts.already_recorded(db, subscription.name, event.id):
            continue
        group_wait_s, group_interval_s, _ = alerts.timing(subscription)
        stored_alerts.record(
            db,
            subscription.name,
            alerts.labels(subscription.group_by, as_event),
            event.id,
            alerts.message_of(event.data),
            now,
            group_wait_s,
            group_interval_s,
            stored_alerts.silence_for(silences, as_event),
        )


def _resolve_groups(db: Session, route: Route, event: EventRow, now: datetime) -> None:
    """Resolve the route's open groups whose labels ``event`` shares (a success)."""
    as_event = {"type": event.type, "id": event.id, "data": event.data}
    for group in stored_alerts.open_groups(db, [route.subscription.name]):
        if alerts.resolves(group.labels, as_event):
            stored_alerts.resolve(db, group.id, f"event {event.id}", now)
