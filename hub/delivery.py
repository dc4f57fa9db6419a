"""One delivery attempt of one notification: claim, render, send, record.

Policy lives here, not in the channels: a channel makes one attempt and
classifies its failure; this module decides between retrying (exponential
backoff with full jitter, never sooner than the provider's ``retry_after_s``)
and failing for good.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from hub.channels import Message, Receipt
from hub.errors import ChannelError, PermanentError, TemplateError, TransientError
from hub.routing import context_for
from hub.runtime import Runtime
from hub.settings import DeliverySettings
from hub.store import repository
from hub.store.db import session
from hub.store.models import Event, Notification, NotificationStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended; ``retry_in_s`` is set when the task must run again."""

    status: NotificationStatus
    retry_in_s: float | None = None


def backoff_s(attempt: int, policy: DeliverySettings, retry_after_s: float | None = None) -> float:
    """Full-jitter exponential backoff for the retry after attempt number ``attempt``."""
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return max(random.uniform(0, ceiling), retry_after_s or 0.0)


def deliver(runtime: Runtime, notification_id: str) -> Outcome | None:
    """Attempt delivery; None when the notification is not ours to send (done or claimed)."""
    url = runtime.settings.resolved_database_url
    with session(url) as db:
        notification = repository.claim(db, notification_id)
        event = repository.get_event(db, notification.event_id) if notification else None
    if notification is None or event is None:
        return None
    try:
        receipt = _send(runtime, notification, event)
    except (TemplateError, PermanentError) as exc:
        return _record(url, notification, NotificationStatus.FAILED, "permanent", str(exc))
    except TransientError as exc:
        return _retry_or_fail(runtime, notification, exc)
    except Exception as exc:
        # A bug or an unclassified library error: keep the notification alive
        # and visible rather than leaving it stuck in "sending".
        log.exception("unexpected error delivering %s", notification_id)
        error = TransientError(f"{type(exc).__name__}: {exc}", channel=notification.channel)
        return _retry_or_fail(runtime, notification, error)
    with session(url) as db:
        repository.finish(
            db,
            notification_id,
            NotificationStatus.SENT,
            outcome="sent",
            provider_message_id=receipt.provider_message_id,
        )
    return Outcome(NotificationStatus.SENT)


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
    )
    try:
        return runtime.run(
            channel.send(message), timeout_s=runtime.settings.delivery.attempt_timeout_s
        )
    except TimeoutError as exc:
        raise TransientError("attempt timed out", channel=channel.name) from exc


def _retry_or_fail(runtime: Runtime, notification: Notification, exc: ChannelError) -> Outcome:
    policy = runtime.settings.delivery
    url = runtime.settings.resolved_database_url
    if notification.attempts >= policy.max_attempts:
        error = f"{exc} (gave up after {notification.attempts} attempts)"
        return _record(url, notification, NotificationStatus.FAILED, "transient", error)
    outcome = _record(url, notification, NotificationStatus.RETRYING, "transient", str(exc))
    return Outcome(outcome.status, backoff_s(notification.attempts, policy, exc.retry_after_s))


def _record(
    url: str, notification: Notification, status: NotificationStatus, outcome: str, error: str
) -> Outcome:
    log.warning("notification %s %s: %s", notification.id, status, error)
    with session(url) as db:
        repository.finish(db, notification.id, status, outcome=outcome, error=error)
    return Outcome(status)
