"""Completion: an event whose every notification is final becomes ``completed``.

Opt-in per event type (``events."<type>".completion = true``): the event then
keeps its counts (:func:`hub.store.events.counts_of`) and one
``event.completed`` is published for it, never one for an ``event.completed``
itself. Events of other types cost nothing: they are left out before any
query.

The check runs where notifications become final: after a delivery batch is
recorded (:class:`hub.middleware.Completion`) and after routing, for an event
whose notifications were all final at once (all suppressed) or that made
none (:func:`complete_routed`). Call :func:`complete` inside the transaction
that made them final, and :func:`announce` once it is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from hub import logs
from hub.errors import BrokerUnavailable, EventError
from hub.settings import Settings
from hub.store import events as stored_events
from hub.store.events import UNFINISHED, CompletedEvent, EventRow
from hub.store.notifications import NewNotification

log = logging.getLogger(__name__)

COMPLETED_EVENT = "event.completed"

# hub.events.publish, handed in:
# publish(event_type, data, idempotency_key=..., keep_if_broker_down=...)
Publish = Callable[..., Any]


def completion_on(settings: Settings, event_type: str) -> bool:
    """Whether events of ``event_type`` are completed (its catalog entry says so)."""
    entry = settings.events.get(event_type)
    return entry is not None and entry.completion


def complete(db: Session, settings: Settings, events: Iterable[EventRow]) -> list[CompletedEvent]:
    """Complete those of ``events`` whose type has completion on and whose notifications are final.

    Safe to call twice and from racing workers: each event is completed, and
    returned, exactly once. No query at all when no type has completion on.
    """
    candidates = {event.id for event in events if completion_on(settings, event.type)}
    if not candidates:
        return []
    return stored_events.complete_events(db, candidates)


def complete_routed(
    db: Session,
    settings: Settings,
    routed: Sequence[EventRow],
    planned: Sequence[NewNotification],
) -> list[CompletedEvent]:
    """:func:`complete` for the events routing just stored ``planned`` for, in its transaction.

    Only those it left nothing open to send: every notification suppressed
    at once, or none at all. One with a notification to send is completed
    by the delivery that records its last one (:class:`hub.middleware.Completion`).
    """
    open_events = {n.event_id for n in planned if n.status in UNFINISHED}
    return complete(db, settings, [event for event in routed if event.id not in open_events])


def completion_data(completed: CompletedEvent) -> dict[str, Any]:
    """The data of the ``event.completed`` event announcing ``completed``."""
    at = completed.completed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event_id": completed.event_id,
        "type": completed.type,
        "counts": completed.counts,
        "completed_at": at,
    }


def announce(publish: Publish, completed: Sequence[CompletedEvent]) -> None:
    """Publish ``event.completed`` for each of ``completed``; never raise.

    Never for an ``event.completed`` event itself. Keyed by the event: a
    repeated announcement (a redelivered task) stores nothing new. Like the
    failure announcement, it is kept if the broker is down, for the sweeper
    to route.
    """
    for one in completed:
        # Announcing an announcement would go on for ever.
        if one.type == COMPLETED_EVENT:
            continue
        key = f"completed:{one.event_id}"
        try:
            publish(
                COMPLETED_EVENT, completion_data(one), idempotency_key=key, keep_if_broker_down=True
            )
        except (EventError, BrokerUnavailable) as exc:
            # The event is completed, with its counts, either way.
            log.error(
                "could not publish %s for %s: %s",
                COMPLETED_EVENT,
                one.event_id,
                exc,
                extra=logs.ids(one.event_id),
            )
        except Exception:
            # Never undo what was committed: the outcomes that completed it.
            log.exception(
                "could not publish %s for %s",
                COMPLETED_EVENT,
                one.event_id,
                extra=logs.ids(one.event_id),
            )
