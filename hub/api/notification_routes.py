"""Finding and resending dead letters: ``/v1/notifications``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from hub import notifications
from hub.api.auth import Access
from hub.settings import Settings


class NotificationSummary(BaseModel):
    id: str
    event_id: str
    channel: str
    recipient: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: datetime


class RetryFilter(BaseModel):
    """Which dead letters to resend; every given field must match."""

    model_config = ConfigDict(extra="forbid")

    status: list[Literal["failed", "unknown", "undelivered"]] = ["failed"]
    channel: str | None = None
    since: str | None = Field(None, examples=["1h", "2026-11-28T00:00:00Z"])
    limit: int = Field(1000, ge=1, le=10_000)


class Requeued(BaseModel):
    requeued: list[str]


def add_notification_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    @app.get("/v1/notifications", dependencies=[Depends(access.read)])
    def list_notifications(
        statuses: Annotated[list[str] | None, Query(alias="status")] = None,
        channel: str | None = None,
        since: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[NotificationSummary]:
        """Notifications by status (e.g. ``?status=failed``), channel and age, newest first."""
        found = notifications.find(
            settings,
            statuses=statuses or [],
            channel=channel,
            since=notifications.parse_since(since),
            limit=limit,
        )
        return [NotificationSummary.model_validate(n, from_attributes=True) for n in found]

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
