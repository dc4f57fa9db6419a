"""Publishing events and reading them back: ``/v1/events``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub import events
from hub.api.auth import Authenticated
from hub.errors import EventError
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import Attempt, Event, Notification


class EventIn(BaseModel):
    """A domain event as publishers send it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, examples=["user.registered"])
    id: str | None = Field(
        None, min_length=1, max_length=200, description="Idempotency key chosen by the publisher"
    )
    data: dict[str, Any] = Field(default_factory=dict)


class BatchIn(BaseModel):
    """Up to 1,000 events; each is validated, stored and answered on its own."""

    model_config = ConfigDict(extra="forbid")

    # Items stay raw here so one malformed item is rejected alone, not the batch.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class BatchItemOut(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    id: str | None = None
    duplicate: bool = False
    errors: list[dict[str, Any]] = []


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemOut]


class AcceptedOut(BaseModel):
    id: str
    status: str = "accepted"
    duplicate: bool = False


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None


class NotificationOut(BaseModel):
    id: str
    subscription: str
    channel: str
    recipient: str
    template: str
    status: str
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    segments: int | None
    provider: str | None = Field(None, description="The channel provider of the last attempt")
    details: dict[str, str] | None = Field(
        None, description="What the channel reported with the send, e.g. the SMS encoding"
    )
    sent_at: datetime | None
    attempt_log: list[AttemptOut]


class EventOut(BaseModel):
    id: str
    type: str
    idempotency_key: str | None
    status: str
    created_at: datetime
    # None only for a stored event no worker could decode (see ``error``).
    data: dict[str, Any] | None
    # Why routing failed, for an event still being retried or quarantined.
    error: str | None
    notifications: list[NotificationOut]


def add_event_routes(app: FastAPI, database_url: str, authenticated: Authenticated) -> None:
    @app.post(
        "/v1/events",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(authenticated)],
    )
    async def publish(event: EventIn) -> AcceptedOut:
        """Validate, store and enqueue an event; the same ``id`` twice yields the first event."""
        accepted = await events.publish_together(event.type, event.data, event.id)
        return AcceptedOut(id=accepted.id, duplicate=accepted.duplicate)

    @app.post(
        "/v1/events:batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchOut,
        dependencies=[Depends(authenticated)],
        responses={422: {"model": BatchOut, "description": "every event was rejected"}},
    )
    def publish_batch(batch: BatchIn) -> BatchOut | JSONResponse:
        """Publish many events at once; the answer holds one result per event, in order."""
        results: list[BatchItemOut | None] = [None] * len(batch.events)
        incoming: list[tuple[int, events.Incoming]] = []
        for index, raw in enumerate(batch.events):
            try:
                item = EventIn.model_validate(raw)
            except ValidationError as exc:
                errors = [_item_error(index, e) for e in exc.errors(include_url=False)]
                results[index] = BatchItemOut(index=index, status="rejected", errors=errors)
                continue
            incoming.append((index, events.Incoming(item.type, item.data, item.id)))
        answers = events.publish_many([item for _, item in incoming])
        for (index, _), answer in zip(incoming, answers, strict=True):
            if isinstance(answer, EventError):
                errors = [{**e, "loc": ["body", "events", index, *e["loc"]]} for e in answer.errors]
                results[index] = BatchItemOut(index=index, status="rejected", errors=errors)
            else:
                results[index] = BatchItemOut(
                    index=index, status="accepted", id=answer.id, duplicate=answer.duplicate
                )
        done = [r for r in results if r is not None]
        accepted = sum(r.status == "accepted" for r in done)
        out = BatchOut(accepted=accepted, rejected=len(done) - accepted, results=done)
        if not accepted:
            return JSONResponse(out.model_dump(), status_code=422)
        return out

    @app.get("/v1/events/{event_id}", dependencies=[Depends(authenticated)])
    def show_event(event_id: str) -> EventOut:
        """The event and every notification it produced, with their attempts."""
        with session(database_url) as db:
            event = stored_events.get_event(db, event_id)
            if event is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
            data = stored_events.event_data(db, event_id)
            notifications = stored_notifications.notifications_of(db, event_id)
            attempts = stored_notifications.attempts_of(db, [n.id for n in notifications])
        return _event_out(event, data, notifications, attempts)


def _item_error(index: int, error: Any) -> dict[str, Any]:
    return {
        "loc": ["body", "events", index, *error["loc"]],
        "msg": error["msg"],
        "type": error["type"],
    }


def _event_out(
    event: Event,
    data: dict[str, Any] | None,
    notifications: Sequence[Notification],
    attempts: Sequence[Attempt],
) -> EventOut:
    by_notification: dict[str, list[AttemptOut]] = {}
    for attempt in attempts:
        by_notification.setdefault(attempt.notification_id, []).append(
            AttemptOut.model_validate(attempt, from_attributes=True)
        )
    fields = [name for name in NotificationOut.model_fields if name != "attempt_log"]
    return EventOut(
        id=event.id,
        type=event.type,
        idempotency_key=event.idempotency_key,
        status=event.status,
        created_at=event.created_at,
        data=data,
        error=event.error,
        notifications=[
            NotificationOut(
                **{name: getattr(n, name) for name in fields},
                attempt_log=by_notification.get(n.id, []),
            )
            for n in notifications
        ],
    )


