"""The delivery core: claim, render, send and record a batch of one channel's notifications.

claim → render → ``before_send`` hooks → ``channel.send`` → classify →
``after_send`` hooks → record → ``after_record`` hooks. A channel makes one
attempt and classifies its failure; the core turns results into states
(sent, failed, unknown) and every policy on top (opt-outs, the poison guard,
rate limits, retries, the failure announcement) is a middleware in
:mod:`hub.middleware`. A batch costs one transaction to claim and one to
record, however large it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from hub.channels.base import Message, Receipt
from hub.errors import ChannelError, OutcomeUnknown, PermanentError, TemplateError, TransientError
from hub.middleware import Batch, Turn
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import NotificationStatus
from hub.templates import context_for

if TYPE_CHECKING:
    from hub.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one notification's turn ended; ``retry_in_s`` is set when it must run again."""

    notification_id: str
    status: NotificationStatus
    retry_in_s: float | None = None


def claim(runtime: Runtime, db: Session, channel: str, notification_ids: Sequence[str]) -> Batch:
    """Claim a batch inside ``db``'s transaction; those not ours to send are left out."""
    claimed = stored_notifications.claim_many(db, notification_ids)
    events = stored_events.events_by_id(db, {n.event_id for n in claimed})
    batch = Batch(channel, runtime.settings, [Turn(n, events[n.event_id]) for n in claimed])
    for middleware in runtime.middleware:
        middleware.after_claim(db, batch)
    return batch


def deliver(runtime: Runtime, channel: str, notification_ids: Sequence[str]) -> list[Outcome]:
    """Claim a batch of one channel's notifications and attempt each (see :func:`send`)."""
    with session(runtime.settings.resolved_database_url) as db:
        batch = claim(runtime, db, channel, notification_ids)
    return send(runtime, batch)


def send(runtime: Runtime, batch: Batch) -> list[Outcome]:
    """Attempt each claimed notification once, concurrently, and record the outcomes."""
    for turn in batch.undecided():
        _render(runtime, turn)
    for middleware in runtime.middleware:
        middleware.before_send(batch)
    ready = [turn for turn in batch.undecided() if turn.message is not None]
    results = _send_all(runtime, batch.channel, [turn.message for turn in ready if turn.message])
    for turn, result in zip(ready, results, strict=True):
        turn.result = result
    for turn in batch.undecided():
        _classify(turn)
    for middleware in runtime.middleware:
        middleware.after_send(batch)
    _record(runtime, batch)
    for middleware in runtime.middleware:
        middleware.after_record(batch)
    return [
        Outcome(turn.notification.id, turn.status, turn.retry_in_s)
        for turn in batch.turns
        if turn.status is not None
    ]


def _render(runtime: Runtime, turn: Turn) -> None:
    notification, event = turn.notification, turn.event
    channel = runtime.channels[notification.channel]
    context = context_for(event.id, event.type, event.data)
    context["recipient"] = notification.recipient
    try:
        rendered = runtime.templates.render(notification.template, context, channel.parts)
    except TemplateError as exc:
        turn.result = exc
        return
    turn.message = Message(
        notification_id=notification.id,
        event_id=event.id,
        event_type=event.type,
        recipient=notification.recipient,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        data=event.data,
    )


def _classify(turn: Turn) -> None:
    """The state a result means on its own; middleware may revise it (retries)."""
    result = turn.result
    if isinstance(result, Receipt):
        turn.decide(NotificationStatus.SENT)
    elif isinstance(result, OutcomeUnknown):
        turn.decide(NotificationStatus.UNKNOWN, str(result))
    elif isinstance(result, TransientError | PermanentError | TemplateError):
        turn.decide(NotificationStatus.FAILED, str(result))


def _send_all(
    runtime: Runtime, channel_name: str, messages: list[Message]
) -> list[Receipt | ChannelError]:
    if not messages:
        return []
    channel = runtime.channels[channel_name]
    timeout_s = runtime.settings.delivery.attempt_timeout_s
    waves = -(-len(messages) // channel.concurrency)
    return runtime.run(channel.send_many(messages, timeout_s), timeout_s=timeout_s * waves + 10)


def _record(runtime: Runtime, batch: Batch) -> None:
    """Store every turn's outcome in one transaction; a rate-limit wait undoes its claim."""
    receipts = []
    waiting = []
    with session(runtime.settings.resolved_database_url) as db:
        for turn in batch.turns:
            nid, status = turn.notification.id, turn.status
            if status is NotificationStatus.SENT:
                assert isinstance(turn.result, Receipt)
                receipt = turn.result
                details = receipt.details or None
                receipts.append((nid, receipt.provider_message_id, receipt.segments, details))
            elif status is NotificationStatus.QUEUED:
                waiting.append(nid)
            elif status is not None:
                log.warning("notification %s %s: %s", nid, status, turn.reason)
                number = stored_notifications.finish(db, nid, status, error=turn.reason)
                turn.recorded, turn.attempt_number = number is not None, number or 0
        if receipts:
            stored_notifications.finish_sent(db, receipts)
        if waiting:
            stored_notifications.release(db, waiting)
        for middleware in runtime.middleware:
            middleware.on_record(db, batch)
