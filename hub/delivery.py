"""One delivery attempt of one notification: throttle, claim, render, send, record.

Policy lives here, not in the channels: a channel makes one attempt and
classifies its failure; this module decides between retrying (exponential
backoff with full jitter, never sooner than the provider's ``retry_after_s``),
holding an unknown outcome for review, and failing for good. A final failure
is published back into the hub as a ``notification.failed`` event, so a
subscription can alert someone about it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from hub import events
from hub.channels import Message, Receipt
from hub.errors import (
    BrokerUnavailable,
    ChannelError,
    EventError,
    OutcomeUnknown,
    PermanentError,
    TemplateError,
    TransientError,
)
from hub.routing import context_for
from hub.runtime import Runtime
from hub.settings import Settings
from hub.store import repository
from hub.store.db import session
from hub.store.models import Event, Notification, NotificationStatus

log = logging.getLogger(__name__)

FAILED_EVENT = "notification.failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery task ended; ``retry_in_s`` is set when it must run again."""

    status: NotificationStatus
    channel: str
    retry_in_s: float | None = None


def backoff_s(attempt: int, settings: Settings, retry_after_s: float | None = None) -> float:
    """Full-jitter exponential backoff for the retry after attempt number ``attempt``."""
    policy = settings.delivery
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return max(random.uniform(0, ceiling), retry_after_s or 0.0)


def max_attempts(settings: Settings, channel: str) -> int:
    return settings.channels.of(channel).max_attempts or settings.delivery.max_attempts


def deliver(runtime: Runtime, notification_id: str) -> Outcome | None:
    """Attempt delivery; None when the notification is not ours to send (done or claimed)."""
    url = runtime.settings.resolved_database_url
    with session(url) as db:
        waiting = repository.get_notification(db, notification_id)
    if waiting is None or waiting.status not in repository.CLAIMABLE:
        return None
    if (wait_s := runtime.throttle(waiting.channel)) > 0:
        # Rate limited: not an attempt, so nothing is claimed or counted; a
        # little jitter keeps workers from waking up all at once. Touched so
        # the sweeper sees it is waiting, not lost.
        with session(url) as db:
            repository.touch(db, notification_id)
        status = NotificationStatus(waiting.status)
        return Outcome(status, waiting.channel, wait_s + random.uniform(0, 0.02))
    with session(url) as db:
        notification = repository.claim(db, notification_id)
        event = repository.get_event(db, notification.event_id) if notification else None
        opted_out = notification is not None and repository.is_opted_out(
            db, notification.channel, notification.recipient
        )
    if notification is None or event is None:
        return None
    if opted_out:
        error = f"{notification.recipient} opted out of {notification.channel}"
        return _record(runtime, notification, event, NotificationStatus.SUPPRESSED, error)
    if notification.attempts > max_attempts(runtime.settings, notification.channel):
        # Only reachable when workers died mid-send every time: a poison message.
        error = f"gave up: {notification.attempts - 1} attempts never finished"
        return _record(runtime, notification, event, NotificationStatus.FAILED, error)
    try:
        receipt = _send(runtime, notification, event)
    except (ChannelError, TemplateError) as exc:
        return _on_failure(runtime, notification, event, exc)
    except Exception as exc:
        # A bug or an unclassified library error: keep the notification alive
        # and visible rather than leaving it stuck in "sending".
        log.exception("unexpected error delivering %s", notification_id)
        error = TransientError(f"{type(exc).__name__}: {exc}", channel=notification.channel)
        return _on_failure(runtime, notification, event, error)
    with session(url) as db:
        repository.finish(
            db,
            notification_id,
            NotificationStatus.SENT,
            outcome="sent",
            provider_message_id=receipt.provider_message_id,
            segments=receipt.segments,
        )
    return Outcome(NotificationStatus.SENT, notification.channel)


def _send(runtime: Runtime, notification: Notification, event: Event) -> Receipt:
    channel = runtime.channels[notification.channel]
    context = context_for(event.id, event.type, event.data)
    context["recipient"] = notification.recipient
    rendered = runtime.templates.render(notification.template, context, channel.parts)
    message = Message(
        notification_id=notification.id,
        event_id=event.id,
        event_type=event.type,
        recipient=notification.recipient,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        data=event.data,
    )
    try:
        return runtime.run(
            channel.send(message), timeout_s=runtime.settings.delivery.attempt_timeout_s
        )
    except TimeoutError as exc:
        # The request may have reached the provider before the cut.
        raise OutcomeUnknown("attempt timed out", channel=channel.name) from exc


def _on_failure(
    runtime: Runtime, notification: Notification, event: Event, exc: ChannelError | TemplateError
) -> Outcome:
    settings = runtime.settings
    if isinstance(exc, PermanentError) and exc.opt_out:
        with session(settings.resolved_database_url) as db:
            repository.add_opt_out(db, notification.channel, notification.recipient, str(exc))
    retry = isinstance(exc, TransientError) or (
        isinstance(exc, OutcomeUnknown)
        and settings.channels.of(notification.channel).on_unknown == "retry"
    )
    if isinstance(exc, OutcomeUnknown) and not retry:
        return _record(runtime, notification, event, NotificationStatus.UNKNOWN, str(exc))
    if not retry:
        return _record(runtime, notification, event, NotificationStatus.FAILED, str(exc))
    assert isinstance(exc, ChannelError)
    if exc.retry_after_s:
        runtime.pause(notification.channel, exc.retry_after_s)
    limit = max_attempts(settings, notification.channel)
    if notification.attempts >= limit:
        error = f"{exc} (gave up after {notification.attempts} attempts)"
        return _record(runtime, notification, event, NotificationStatus.FAILED, error)
    _record(runtime, notification, event, NotificationStatus.RETRYING, str(exc))
    delay = backoff_s(notification.attempts, settings, exc.retry_after_s)
    return Outcome(NotificationStatus.RETRYING, notification.channel, delay)


_OUTCOMES = {
    NotificationStatus.SUPPRESSED: "suppressed",
    NotificationStatus.UNKNOWN: "unknown",
    NotificationStatus.FAILED: "failed",
    NotificationStatus.RETRYING: "transient",
}


def _record(
    runtime: Runtime,
    notification: Notification,
    event: Event,
    status: NotificationStatus,
    error: str,
) -> Outcome:
    log.warning("notification %s %s: %s", notification.id, status, error)
    with session(runtime.settings.resolved_database_url) as db:
        recorded = repository.finish(
            db, notification.id, status, outcome=_OUTCOMES[status], error=error
        )
        final = recorded and status in (NotificationStatus.FAILED, NotificationStatus.UNKNOWN)
        attempt_number = repository.last_attempt_number(db, notification.id) if final else 0
    if final:
        _announce(notification, event, status, error, attempt_number)
    return Outcome(status, notification.channel)


def _announce(
    notification: Notification,
    event: Event,
    status: NotificationStatus,
    error: str,
    attempt_number: int,
) -> None:
    """Publish ``notification.failed`` so failure-alert subscriptions can route it."""
    if event.type == FAILED_EVENT:
        return  # a failed failure alert must not raise another one, forever
    data = {
        "notification_id": notification.id,
        "event_id": event.id,
        "event_type": event.type,
        "channel": notification.channel,
        "recipient": notification.recipient,
        "status": str(status),
        "attempts": notification.attempts,
        "error": error,
    }
    # Keyed by attempt number: a redelivered task announces once, while a new
    # failure after a manual retry is announced again.
    key = f"failed:{notification.id}:{attempt_number}"
    try:
        events.publish(FAILED_EVENT, data, idempotency_key=key, keep_if_broker_down=True)
    except (EventError, BrokerUnavailable) as exc:
        # The failure is recorded on the notification either way.
        log.error("could not publish %s for %s: %s", FAILED_EVENT, notification.id, exc)
