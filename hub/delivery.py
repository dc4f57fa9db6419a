"""Delivery attempts for a batch of one channel's notifications: claim, render, send, record.

Policy lives here, not in the channels: a channel makes one attempt and
classifies its failure; this module decides between retrying (exponential
backoff with full jitter, never sooner than the provider's ``retry_after_s``),
holding an unknown outcome for review, and failing for good. A final failure
is published back into the hub as a ``notification.failed`` event, so a
subscription can alert someone about it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

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
from hub.store.models import NotificationStatus
from hub.store.repository import Claimed, EventRow

log = logging.getLogger(__name__)

FAILED_EVENT = "notification.failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one notification's turn ended; ``retry_in_s`` is set when it must run again."""

    notification_id: str
    status: NotificationStatus
    retry_in_s: float | None = None


def backoff_s(attempt: int, settings: Settings, retry_after_s: float | None = None) -> float:
    """Full-jitter exponential backoff for the retry after attempt number ``attempt``."""
    policy = settings.delivery
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return max(random.uniform(0, ceiling), retry_after_s or 0.0)


def max_attempts(settings: Settings, channel: str) -> int:
    return settings.channels.of(channel).max_attempts or settings.delivery.max_attempts


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch of one channel's notifications this worker now owns, with what sending needs."""

    channel: str
    notifications: list[Claimed]
    events: dict[str, EventRow]
    opted_out: set[str]


def claim(db: Session, channel: str, notification_ids: Sequence[str]) -> Claim:
    """Claim a batch inside ``db``'s transaction.

    Those not ours to send (done, or claimed by another worker) are left out.
    """
    claimed = repository.claim_many(db, notification_ids)
    return Claim(
        channel,
        claimed,
        repository.events_by_id(db, {n.event_id for n in claimed}),
        repository.opted_out(db, channel, {n.recipient for n in claimed}),
    )


def deliver(runtime: Runtime, channel: str, notification_ids: Sequence[str]) -> list[Outcome]:
    """Claim a batch of one channel's notifications and attempt each (see :func:`send`)."""
    with session(runtime.settings.resolved_database_url) as db:
        claimed = claim(db, channel, notification_ids)
    return send(runtime, claimed)


def send(runtime: Runtime, claimed: Claim) -> list[Outcome]:
    """Attempt each claimed notification once, concurrently on the worker's loop.

    A batch costs one transaction to record however large it is.
    """
    channel = claimed.channel
    outcomes: list[Outcome] = []
    batch: list[tuple[Claimed, EventRow, Message]] = []
    for notification in claimed.notifications:
        event = claimed.events[notification.event_id]
        if notification.recipient in claimed.opted_out:
            error = f"{notification.recipient} opted out of {channel}"
            status = NotificationStatus.SUPPRESSED
            outcomes.append(_record(runtime, notification, event, status, error))
        elif notification.attempts > max_attempts(runtime.settings, channel):
            # Only reachable when workers died mid-send every time: a poison message.
            error = f"gave up: {notification.attempts - 1} attempts never finished"
            status = NotificationStatus.FAILED
            outcomes.append(_record(runtime, notification, event, status, error))
        else:
            try:
                batch.append((notification, event, _message(runtime, notification, event)))
            except TemplateError as exc:
                outcomes.append(_on_failure(runtime, notification, event, exc))
    # Tokens are taken after the claim, right before the sends: a slow claim
    # must not bunch sends together at the provider.
    batch, waiting = _take_tokens(runtime, channel, batch)
    outcomes += waiting
    results = _send_all(runtime, channel, [message for _, _, message in batch])
    receipts = []
    for (notification, event, _), result in zip(batch, results, strict=True):
        if isinstance(result, Receipt):
            receipts.append((notification.id, result.provider_message_id, result.segments))
            outcomes.append(Outcome(notification.id, NotificationStatus.SENT))
        else:
            outcomes.append(_on_failure(runtime, notification, event, result))
    if receipts:
        with session(runtime.settings.resolved_database_url) as db:
            repository.finish_sent(db, receipts)
    return outcomes


def _take_tokens(
    runtime: Runtime, channel: str, batch: list[tuple[Claimed, EventRow, Message]]
) -> tuple[list[tuple[Claimed, EventRow, Message]], list[Outcome]]:
    """Split the batch into those the rate limit lets go now and those that must wait.

    Waiting is not an attempt: the waiting ones are released (claim and
    attempt undone) and come back spread one interval apart, with a little
    jitter so workers do not wake together.
    """
    # Without a rate limit only a provider's pause can hold the batch: one look for all.
    limited = bool(runtime.settings.channels.of(channel).rate_limit)
    for index in range(len(batch) if limited else min(len(batch), 1)):
        wait_s = runtime.throttle(channel)
        if wait_s > 0:
            later = [notification.id for notification, _, _ in batch[index:]]
            with session(runtime.settings.resolved_database_url) as db:
                repository.release(db, later)
            interval_s = runtime.rate_interval_s(channel)
            return batch[:index], [
                Outcome(
                    nid,
                    NotificationStatus.QUEUED,
                    wait_s + n * interval_s + random.uniform(0, 0.02),
                )
                for n, nid in enumerate(later)
            ]
    return batch, []


def _message(runtime: Runtime, notification: Claimed, event: EventRow) -> Message:
    channel = runtime.channels[notification.channel]
    context = context_for(event.id, event.type, event.data)
    context["recipient"] = notification.recipient
    rendered = runtime.templates.render(notification.template, context, channel.parts)
    return Message(
        notification_id=notification.id,
        event_id=event.id,
        event_type=event.type,
        recipient=notification.recipient,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        data=event.data,
    )


def _send_all(
    runtime: Runtime, channel_name: str, messages: list[Message]
) -> list[Receipt | ChannelError]:
    """One attempt per message, concurrently; each ends in a receipt or a classified error."""
    if not messages:
        return []
    channel = runtime.channels[channel_name]
    timeout_s = runtime.settings.delivery.attempt_timeout_s

    async def attempt(message: Message, slots: asyncio.Semaphore) -> Receipt | ChannelError:
        try:
            # The timeout runs from the send, not from the wait for a free slot.
            async with slots:
                return await asyncio.wait_for(channel.send(message), timeout_s)
        except ChannelError as exc:
            return exc
        except TimeoutError:
            # The request may have reached the provider before the cut.
            return OutcomeUnknown("attempt timed out", channel=channel_name)
        except Exception as exc:
            # A bug or an unclassified library error: keep the notification
            # alive and visible rather than leaving it stuck in "sending".
            log.exception("unexpected error delivering %s", message.notification_id)
            return TransientError(f"{type(exc).__name__}: {exc}", channel=channel_name)

    async def attempt_all() -> list[Receipt | ChannelError]:
        slots = asyncio.Semaphore(channel.concurrency)
        return list(await asyncio.gather(*(attempt(m, slots) for m in messages)))

    waves = -(-len(messages) // channel.concurrency)
    return runtime.run(attempt_all(), timeout_s=timeout_s * waves + 10)


def _on_failure(
    runtime: Runtime, notification: Claimed, event: EventRow, exc: ChannelError | TemplateError
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
    return Outcome(notification.id, NotificationStatus.RETRYING, delay)


_OUTCOMES = {
    NotificationStatus.SUPPRESSED: "suppressed",
    NotificationStatus.UNKNOWN: "unknown",
    NotificationStatus.FAILED: "failed",
    NotificationStatus.RETRYING: "transient",
}


def _record(
    runtime: Runtime,
    notification: Claimed,
    event: EventRow,
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
    return Outcome(notification.id, status)


def _announce(
    notification: Claimed,
    event: EventRow,
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
