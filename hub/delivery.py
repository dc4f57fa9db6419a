"""The delivery core: claim, render, send and record a batch of one channel's notifications.

claim → render → ``before_send`` hooks → ``channel.send`` (the next provider
on a transient failure) → classify →
``after_send`` hooks → record → ``after_record`` hooks. A channel makes one
attempt and classifies its failure; the core turns results into states
(sent, failed, unknown) and every policy on top (opt-outs, the poison guard,
circuits, rate limits, retries, expiry, the failure announcement) is a
middleware in :mod:`hub.middleware`. A batch costs one transaction to claim;
its sends are stored as they complete and the rest of its outcomes in one
more (:mod:`hub.recording`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from hub import links, metrics
from hub.addressing import profile
from hub.alerts import context as alert_context
from hub.channels.base import Message, Receipt
from hub.errors import (
    ChannelError,
    OutcomeUnknown,
    PermanentError,
    TemplateError,
    TransientError,
)
from hub.middleware import Batch, Turn
from hub.recording import SendRecorder, record
from hub.store import alerts as stored_alerts
from hub.store import digests
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store import recipients as stored_recipients
from hub.store import templates as stored_templates
from hub.store.db import session
from hub.store.models import NotificationStatus
from hub.store.notifications import Claimed
from hub.templates import TemplateSet, context_for

if TYPE_CHECKING:
    from hub.runtime import Runtime


def claim(
    runtime: Runtime,
    db: Session,
    channel: str,
    notification_ids: Sequence[str],
    reserved: bool = False,
) -> Batch:
    """Claim a batch inside ``db``'s transaction; those not ours to send are left out."""
    claimed = stored_notifications.claim_many(db, notification_ids)
    folded = digests.members(db, [n.id for n in claimed if n.is_digest])
    event_ids = {n.event_id for n in claimed}.union(*folded.values())
    events = stored_events.events_by_id(db, event_ids)
    named = {n.recipient_id for n in claimed if n.recipient_id}
    profiles = stored_recipients.recipients_by_id(db, named) if named else {}
    alerts = _alerts(runtime, db, [n.alert_id for n in claimed if n.alert_id])
    providers = list(runtime.providers[channel])
    turns = [
        Turn(
            n,
            events[n.event_id],
            profile=profile(profiles[n.recipient_id]) if n.recipient_id in profiles else None,
            digest=[events[e] for e in folded[n.id] if e in events] if n.is_digest else None,
            alert=alerts.get(n.alert_id) if n.alert_id else None,
            providers=list(providers),
        )
        for n in claimed
    ]
    templates = runtime.library.load(db)
    stored_templates.record_versions(db, _versions(templates, claimed))
    batch = Batch(channel, runtime.settings, turns, reserved, templates=templates)
    for middleware in runtime.middleware:
        middleware.after_claim(db, batch)
    return batch


def _versions(templates: TemplateSet, claimed: Sequence[Claimed]) -> dict[int, list[str]]:
    """The notifications each template version renders: ``{version: [ids]}``."""
    by_version: dict[int, list[str]] = {}
    for notification in claimed:
        if (version := templates.version(notification.template)) is not None:
            by_version.setdefault(version, []).append(notification.id)
    return by_version


def _alerts(runtime: Runtime, db: Session, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The alert groups of a batch's alert notifications, as templates see them, by id."""
    if not alert_ids:
        return {}
    return {
        group.id: alert_context(
            alert_id=group.id,
            status=group.status,
            count=group.count,
            first_seen=group.first_seen,
            last_seen=group.last_seen,
            messages=group.messages,
            group=group.labels,
            ack_url=links.ack_url(runtime.settings, group.id),
        )
        for group in stored_alerts.groups(db, alert_ids).values()
    }


def deliver(
    runtime: Runtime, channel: str, notification_ids: Sequence[str], reserved: bool = False
) -> list[Turn]:
    """Claim a batch of one channel's notifications and attempt each (see :func:`send`)."""
    with session(runtime.settings.resolved_database_url) as db:
        batch = claim(runtime, db, channel, notification_ids, reserved)
    return send(runtime, batch)


def send(runtime: Runtime, batch: Batch) -> list[Turn]:
    """Attempt each claimed notification once, concurrently, and record the outcomes.

    Returns the turns, each decided; ``retry_in_s`` is set on those to run again.
    """
    for turn in batch.undecided():
        _render(runtime, batch, turn)
    for middleware in runtime.middleware:
        middleware.before_send(batch)
    _send_all(runtime, batch)
    for turn in batch.undecided():
        _classify(turn)
    for middleware in runtime.middleware:
        middleware.after_send(batch)
    record(runtime.settings.resolved_database_url, batch, runtime.middleware)
    for middleware in runtime.middleware:
        middleware.after_record(batch)
    return batch.turns


def _render(runtime: Runtime, batch: Batch, turn: Turn) -> None:
    """Check the turn's recipient and render its message; a failure decides this turn alone.

    A recipient its channel refuses fails as ``invalid_address`` before any
    provider is asked (or any rate-limit token spent). Any exception while
    rendering fails as ``template_error``: one bad template or datum never
    leaves the rest of its batch ``sending``.
    """
    notification, event = turn.notification, turn.event
    channel = runtime.settings.channel_classes[notification.channel]
    if turn.digest == []:
        turn.decide(NotificationStatus.SUPPRESSED, "cancelled: every event of the digest was")
        return
    try:
        recipient = channel.address(
            runtime.settings.channels.of(notification.channel), notification.recipient
        )
        context = context_for(event.id, event.type, event.data)
        context["recipient"] = notification.recipient
        if turn.profile is not None:
            context["profile"] = turn.profile
        if turn.digest is not None:
            context["events"] = [one.data for one in turn.digest]
            context["count"] = len(turn.digest)
        if turn.alert is not None:
            context["alert"] = turn.alert
        unsubscribe_url = _unsubscribe_url(runtime, notification)
        if unsubscribe_url:
            context["unsubscribe_url"] = unsubscribe_url
        assert batch.templates is not None  # claim() loads them
        locale = turn.profile.get("locale") if turn.profile else None
        rendered = batch.templates.render(notification.template, channel.variant, context, locale)
    except PermanentError as exc:
        turn.result = exc
        turn.decide(NotificationStatus.FAILED, f"invalid_address: {exc.args[0]}")
        return
    except Exception as exc:
        # Templates raise only TemplateError; anything else (a plugin channel's
        # bug, say) is recorded as the reason (the recorder logs it) and still
        # fails this turn alone.
        error = (
            exc
            if isinstance(exc, TemplateError)
            else TemplateError(notification.template, f"{type(exc).__name__}: {exc}")
        )
        turn.result = error
        turn.decide(NotificationStatus.FAILED, f"template_error: {error}")
        return
    limit = runtime.settings.delivery.max_message_bytes
    if (size := rendered.size_bytes()) > limit:
        reason = f"{size} bytes rendered, over delivery.max_message_bytes ({limit})"
        turn.result = TemplateError(notification.template, reason)
        turn.decide(NotificationStatus.FAILED, f"limit_exceeded: {reason}")
        return
    turn.message = Message(
        notification_id=notification.id,
        event_id=event.id,
        event_type=event.type,
        recipient=recipient,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        data=event.data,
        unsubscribe_url=unsubscribe_url,
        alert=turn.alert,
    )


def _unsubscribe_url(runtime: Runtime, notification: Claimed) -> str | None:
    """The signed one-click link of a notification of a category to a stored recipient."""
    if not (notification.recipient_id and notification.category):
        return None
    return links.unsubscribe_url(runtime.settings, notification.recipient_id, notification.category)


def _classify(turn: Turn) -> None:
    """The state a result means on its own; middleware may revise it (retries)."""
    result = turn.result
    if isinstance(result, Receipt):
        turn.decide(NotificationStatus.SENT)
    elif isinstance(result, OutcomeUnknown):
        turn.decide(NotificationStatus.UNKNOWN, str(result))
    elif isinstance(result, TransientError | PermanentError | TemplateError):
        turn.decide(NotificationStatus.FAILED, str(result))


def _send_all(runtime: Runtime, batch: Batch) -> None:
    """Send each ready turn through its first provider; a transient failure tries the next.

    Failover happens within the attempt: the turn's ``providers`` (the
    channel's, in order, less those a middleware held back) are tried until
    one answers or none is left.
    """
    pending = [turn for turn in batch.undecided() if turn.message and turn.providers]
    while pending:
        by_provider: dict[str, list[Turn]] = {}
        for turn in pending:
            by_provider.setdefault(turn.providers.pop(0), []).append(turn)
        for provider, turns in by_provider.items():
            _send_through(runtime, batch, provider, turns)
        pending = [t for t in pending if isinstance(t.result, TransientError) and t.providers]


def _send_through(runtime: Runtime, batch: Batch, provider: str, turns: list[Turn]) -> None:
    """One attempt for each of ``turns`` through ``provider``, each send stored as it ends."""
    policy = runtime.settings.delivery
    channel = runtime.providers[batch.channel][provider]
    recorder = SendRecorder(runtime.settings.resolved_database_url, batch, policy.lease_s)
    # A send's time, for hub_send_seconds: sends start in order, ``concurrency``
    # at a time, so the k-th one (past the first wave) started when the
    # (k - concurrency)-th answer freed its slot.
    began = time.monotonic()
    answered: list[float] = []
    took: list[float] = []

    def arrived(index: int, result: Receipt | ChannelError) -> None:
        now = time.monotonic()
        wave = index - channel.concurrency
        took.append(now - (answered[wave] if 0 <= wave < len(answered) else began))
        answered.append(now)
        turn = turns[index]
        turn.result, turn.provider = result, provider
        turn.tried.append((provider, result))
        if isinstance(result, Receipt):
            recorder.sent(turn)

    messages = [turn.message for turn in turns if turn.message]
    waves = -(-len(messages) // channel.concurrency)
    sending = recorder.run(channel.send_many(messages, policy.attempt_timeout_s, arrived))
    try:
        runtime.run(sending, timeout_s=policy.attempt_timeout_s * waves + 10)
    finally:
        metrics.send_seconds(batch.channel, took)
