"""Listing notifications under filters, and resending dead letters: ``/v1/notifications``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from hub import notifications
from hub.api.auth import Access
from hub.api.cursors import decode_cursor, encode_cursor
from hub.api.event_routes import AttemptOut, NotificationOut, attempt_logs
from hub.api.time_range import time_range
from hub.settings import Settings
from hub.store import activity
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import Notification, NotificationStatus


class RetryFilter(BaseModel):
    """Which dead letters to resend; every given field must match."""

    model_config = ConfigDict(extra="forbid")

    status: list[Literal["failed", "unknown", "undelivered"]] = ["failed"]
    channel: str | None = None
    since: str | None = Field(None, examples=["1h", "2026-11-28T00:00:00Z"])
    limit: int = Field(1000, ge=1, le=10_000)


class Requeued(BaseModel):
    requeued: list[str]


class NotificationItem(NotificationOut):
    """A notification as lists show it: :class:`NotificationOut` with its event and times."""

    event_id: str
    event_type: str
    priority: str
    category: str | None
    created_at: datetime
    updated_at: datetime


class NotificationPage(BaseModel):
    items: list[NotificationItem]
    next_cursor: str | None


Order = Literal["asc", "desc"]


def notification_item(
    notification: Notification, event_type: str, attempt_log: list[AttemptOut]
) -> NotificationItem:
    fields = {
        name: getattr(notification, name)
        for name in NotificationItem.model_fields
        if name not in ("attempt_log", "event_type")
    }
    return NotificationItem(**fields, event_type=event_type, attempt_log=attempt_log)


def add_notification_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    url = settings.resolved_database_url

    @app.get("/v1/notifications", dependencies=[Depends(access.read)])
    def list_notifications(
        event_type: str | None = None,
        channel: str | None = None,
        statuses: Annotated[
            list[NotificationStatus] | None,
            Query(alias="status", description="Repeatable: any of them"),
        ] = None,
        recipient: Annotated[
            str | None, Query(description="An address as sent, or a stored recipient's id")
        ] = None,
        since: Annotated[
            str | None, Query(description="Created at or after: ISO 8601, or a duration ago (1h)")
        ] = None,
        until: Annotated[str | None, Query(description="Created before: ISO 8601")] = None,
        order: Order = "asc",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> NotificationPage:
        """Notifications by event type, channel, status, recipient and creation time.

        Pages in ``(created_at, id)`` order (``order=desc``: newest first);
        each carries its ``attempt_log``.
        """
        start, end = time_range(since, until)
        filters = activity.NotificationFilter(
            event_type=event_type,
            channel=channel,
            statuses=[s.value for s in statuses or []],
            recipient=recipient,
            since=start,
            until=end,
        )
        after = decode_cursor(cursor) if cursor is not None else None
        with session(url) as db:
            rows = activity.notification_page(db, filters, after, limit + 1, order == "desc")
            page, more = rows[:limit], len(rows) > limit
            attempts = stored_notifications.attempts_of(db, [n.id for n, _ in page])
        logs = attempt_logs(attempts)
        last = page[-1][0] if page else None
        return NotificationPage(
            items=[notification_item(n, event_type, logs.get(n.id, [])) for n, event_type in page],
            next_cursor=encode_cursor((last.created_at, last.id)) if more and last else None,
        )

    @app.post(
        "/v1/notifications/{notification_id}/retry",
        status_code=202,
        dependencies=[Depends(access.admin)],
    )
    def retry_one(notification_id: str) -> Requeued:
        """Send a failed, unknown or undelivered notification again, with fresh attempts."""
        requeued = notifications.retry(settings, ids=[notification_id])
        if not requeued:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{notification_id!r} does not exist or is not failed, unknown or undelivered",
            )
        return Requeued(requeued=requeued)

    @app.post("/v1/notifications:retry", status_code=202, dependencies=[Depends(access.admin)])
    def retry_many(selection: RetryFilter) -> Requeued:
        """Bulk retry of the dead letters matching a filter."""
        requeued = notifications.retry(
            settings,
            statuses=selection.status,
            channel=selection.channel,
            since=notifications.parse_since(selection.since),
            limit=selection.limit,
        )
        return Requeued(requeued=requeued)
