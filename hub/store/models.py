"""The store's tables: events, the notifications they produce, delivery attempts, API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stored as UTC and read back as aware UTC on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class EventStatus(StrEnum):
    ACCEPTED = "accepted"  # stored, routing task enqueued (or to be re-enqueued by the sweeper)
    ROUTED = "routed"  # its notifications exist
    COMPLETED = "completed"  # every notification is final (event types with completion on)
    QUARANTINED = "quarantined"  # routing failed repeatedly; kept with its error, never swept


class NotificationStatus(StrEnum):
    QUEUED = "queued"
    # Held in the store until ``not_before``: a delay, deliver_at, quiet hours, a digest window.
    SCHEDULED = "scheduled"
    # Held behind an open circuit or a rate limit, without spending an attempt.
    WAITING = "waiting"
    SENDING = "sending"
    SENT = "sent"  # the provider accepted it
    RETRYING = "retrying"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # not sent on purpose: the recipient opted out
    UNKNOWN = "unknown"  # the provider may have sent it; held for review, never resent silently
    DELIVERED = "delivered"  # the provider reported delivery (status callback)
    UNDELIVERED = "undelivered"  # the provider reported it could not deliver
    EXPIRED = "expired"  # its subscription's ttl passed before it could go out
    DIGESTED = "digested"  # folded into the digest notification ``digest_id`` names


class Event(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default=EventStatus.ACCEPTED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    routed_at: Mapped[datetime | None]
    routing_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # Who the publisher named: recipient ids (inline ones already stored) and topic keys.
    recipients: Mapped[list[str] | None] = mapped_column(JSON)
    topics: Mapped[list[str] | None] = mapped_column(JSON)
    # Not to be delivered before this time (the publisher's deliver_at).
    deliver_at: Mapped[datetime | None]
    # The publisher's handle for POST /v1/cancel, and when that cancelled it.
    cancellation_key: Mapped[str | None] = mapped_column(String(200), index=True)
    cancelled_at: Mapped[datetime | None]
    # When its last notification became final, and how many ended in which way.
    completed_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index("ix_events_status_created", "status", "created_at"),
        # Lists page in this order (GET /v1/events).
        Index("ix_events_created", "created_at", "id"),
    )


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    subscription: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(500))
    # The stored recipient it goes to, when it was addressed by id or topic.
    recipient_id: Mapped[str | None] = mapped_column(String(200), index=True)
    template: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=NotificationStatus.QUEUED)
    # Its subscription's priority class, which picks its queue (hub.queues).
    priority: Mapped[str] = mapped_column(String(10), default="normal", server_default="normal")
    # Its subscription's category when routed: what an unsubscribe link turns off.
    category: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(500), index=True)
    segments: Mapped[int | None] = mapped_column(Integer)
    # When it is no longer worth sending (its subscription's ttl); None: never.
    expires_at: Mapped[datetime | None]
    # The channel provider that made the last attempt ([[channels.<name>.providers]]).
    provider: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any] | None]  # what the channel reported on sending (Receipt.details)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # A scheduled one is held until then (hub.scheduling).
    not_before: Mapped[datetime | None]
    # A digested one names the digest notification it was folded into; a
    # digest is itself a notification, scheduled until its window closes.
    digest_id: Mapped[str | None] = mapped_column(String(40), index=True)
    is_digest: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A failure alert's notification names its group (hub.alerts).
    alert_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # The version of its template that rendered it (the active one at its claim).
    template_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_notifications_status_updated", "status", "updated_at"),
        # Lists page in this order (GET /v1/notifications).
        Index("ix_notifications_created", "created_at", "id"),
        # One open window per subscription, channel and recipient, whatever races.
        Index(
            "uq_notifications_open_digest",
            "subscription",
            "channel",
            "recipient",
            unique=True,
            sqlite_where=text("is_digest AND status = 'scheduled'"),
            postgresql_where=text("is_digest AND status = 'scheduled'"),
        ),
        Index(
            "ix_notifications_scheduled",
            "not_before",
            sqlite_where=text("status = 'scheduled'"),
            postgresql_where=text("status = 'scheduled'"),
        ),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notifications.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(20))  # sent, transient, permanent
    error: Mapped[str | None] = mapped_column(Text)


class OptOut(Base):
    """A recipient who asked not to be contacted on a channel again (e.g. SMS STOP)."""

    __tablename__ = "opt_outs"

    channel: Mapped[str] = mapped_column(String(40), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(500), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key's hash, what it may do and how long; rows stay after revocation, for the record."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique among keys not revoked: a rotated key's successor takes its name.
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "admin", "read", "publish:<glob>" (see hub.keys).
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Networks (CIDR) the key may be used from; None: anywhere.
    allowed_networks: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_api_keys_live_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class Recipient(Base):
    """Someone notifications go to: their addresses per channel and what they want to receive."""

    __tablename__ = "recipients"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(50))
    # A Slack member or channel id, never a URL.
    slack: Mapped[str | None] = mapped_column(String(100))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"channels": {"sms": false}, "categories": {...}, "quiet_hours": {"start", "end"}}
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopicMember(Base):
    """A recipient's membership of a topic (``oncall``, ``newsletter``)."""

    __tablename__ = "topic_members"

    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredSubscription(Base):
    """A subscription made through the API; its definition is validated at the edge."""

    __tablename__ = "subscriptions"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConfigVersion(Base):
    """A counter per kind of run-time configuration, bumped by every change to it.

    Workers compare it before routing, so a change applies to the next event
    on every worker, however many machines they run on, with no signal.
    """

    __tablename__ = "config_versions"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    # What was loaded at this version, where a kind keeps it (hub reload: settings).
    snapshot: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Template(Base):
    """A template's name, the event type it renders and which of its versions is live."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_type: Mapped[str | None] = mapped_column(String(200))
    active_version: Mapped[int] = mapped_column(Integer)
    # The hash of the files last imported (hub.template_files): an edit made
    # through the API wins until the files change again.
    file_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TemplateVersion(Base):
    """One saved version of a template: never changed once written."""

    __tablename__ = "template_versions"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # {"variants": {variant: {part: source}}, "locales": {locale: {variant: {part: source}}}}
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    event_type: Mapped[str | None] = mapped_column(String(200))
    author: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    draft: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str] = mapped_column(String(20))  # files | api | rollback
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertStatus(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"  # a person took it: escalation stops
    RESOLVED = "resolved"  # a success, a person, or resolve_after closed it
    SILENCED = "silenced"  # a silence matched: recorded, nothing sent


class AlertGroup(Base):
    """Failures of one kind grouped on a subscription's ``group_by`` labels (hub.alerts).

    The store is the source of truth for when it notifies and escalates: each
    step is a conditional UPDATE, so a worker restart or a second beat can
    neither lose nor repeat one.
    """

    __tablename__ = "alert_groups"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription: Mapped[str] = mapped_column(String(200))
    # A hash of the label values: at most one open group per subscription and key.
    group_key: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=AlertStatus.FIRING)
    count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Up to 5 distinct messages, first seen first.
    messages: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    # When the group next notifies (group_wait, group_interval, repeat_interval).
    next_notify_at: Mapped[datetime | None]
    # The count its last notification showed, and how many it sent.
    notified_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notifications_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_notified_at: Mapped[datetime | None]
    last_notified_at: Mapped[datetime | None]
    # The next escalation step to take (an index into the subscription's escalation).
    escalation_step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    silence_id: Mapped[str | None] = mapped_column(String(40))
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index(
            "uq_alert_groups_open",
            "subscription",
            "group_key",
            unique=True,
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
        Index("ix_alert_groups_status_next", "status", "next_notify_at"),
        Index("ix_alert_groups_created", "created_at", "id"),
    )


class AlertEvent(Base):
    """An event folded into an alert group: the group's history."""

    __tablename__ = "alert_events"

    group_id: Mapped[str] = mapped_column(ForeignKey("alert_groups.id"), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Silence(Base):
    """A silence: alerts whose events match every matcher, until ``ends_at``, send nothing.

    ``matchers`` are ``{"data.service": "billing"}``; such alerts are still
    recorded, as ``silenced``.
    """

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    matchers: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(index=True)
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """A worker's last sign of life, where there is no Redis to keep it (hub.health)."""

    __tablename__ = "worker_heartbeats"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
