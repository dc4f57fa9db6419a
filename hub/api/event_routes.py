"""Publishing events, listing them under filters and reading one back: ``/v1/events``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from hub import events
from hub.api.auth import Access, check_publish, publish_refusal
from hub.api.cursors import decode_cursor, encode_cursor
from hub.api.time_range import time_range
from hub.errors import EventError
from hub.keys import Principal
from hub.settings import get_settings
from hub.store import activity
from hub.store import events as stored_events
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import Attempt, Event, EventStatus, Notification


class EventIn(BaseModel):
    """A domain event as publishers send it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, examples=["user.registered"])
    id: str | None = Field(
        None, min_length=1, max_length=200, description="Idempotency key chosen by the publisher"
    )
    data: dict[str, Any] = Field(default_factory=dict)
    recipients: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description='Recipient ids, or inline recipients stored as given: ["user-1", {"id": ...}]',
    )
    topics: list[str] = Field(default_factory=list, description="Topic keys: every member hears")
    deliver_at: AwareDatetime | None = Field(
        None, description="Not to be delivered before this time (ISO 8601 with an offset)"
    )
    cancellation_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="POST /v1/cancel with it stops what this event has not sent yet",
    )

    @property
    def to(self) -> events.Envelope:
        return events.Envelope(self.recipients, self.topics, self.deliver_at, self.cancellation_key)


class BatchIn(BaseModel):
    """Up to ``api.max_batch_items`` events; each is validated, stored and answered on its own."""

    model_config = ConfigDict(extra="forbid")

    # Items stay raw here so one malformed item is rejected alone, not the batch.
    events: list[dict[str, Any]] = Field(min_length=1)


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
    duration_s: float | None = Field(None, description="From start to finish; None while open")

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        finished = attempt.finished_at
        took = None if finished is None else (finished - attempt.started_at).total_seconds()
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            finished_at=finished,
            outcome=attempt.outcome,
            error=attempt.error,
            duration_s=took,
        )


def attempt_logs(attempts: Sequence[Attempt]) -> dict[str, list[AttemptOut]]:
    """``{notification id: its attempts, first first}`` of attempts in that order."""
    by_notification: dict[str, list[AttemptOut]] = {}
    for attempt in attempts:
        by_notification.setdefault(attempt.notification_id, []).append(AttemptOut.of(attempt))
    return by_notification


class NotificationOut(BaseModel):
    id: str
    subscription: str
    channel: str
    recipient: str
    recipient_id: str | None = Field(None, description="The stored recipient, when one was named")
    template: str
    status: str
    not_before: datetime | None = Field(None, description="A scheduled one is held until then")
    digest_id: str | None = Field(None, description="The digest a digested one was folded into")
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


class CountsOut(BaseModel):
    """How an event's notifications ended; ``total`` is the sum of the five groups."""

    total: int
    delivered: int = Field(description="sent or delivered")
    failed: int = Field(description="failed, undelivered, expired or unknown")
    suppressed: int
    digested: int = Field(description="folded into a digest notification")
    pending: int = Field(description="not final yet")
    by_status: dict[str, int]


class EventOut(BaseModel):
    id: str
    type: str
    idempotency_key: str | None
    status: str
    created_at: datetime
    # Live while the event is open; kept as they were once it is completed.
    counts: CountsOut
    # When its last notification became final (event types with completion on).
    completed_at: datetime | None
    # None only for a stored event no worker could decode (see ``error``).
    data: dict[str, Any] | None
    # Why routing failed, for an event still being retried or quarantined.
    error: str | None
    notifications: list[NotificationOut]


class EventSummary(BaseModel):
    """An event as lists show it: its notifications only counted (``GET /v1/events/{id}``)."""

    id: str
    type: str
    idempotency_key: str | None
    status: str
    created_at: datetime
    routed_at: datetime | None
    completed_at: datetime | None
    error: str | None
    counts: CountsOut


class EventPage(BaseModel):
    items: list[EventSummary]
    next_cursor: str | None


def add_event_routes(app: FastAPI, database_url: str, access: Access) -> None:
    # The key's holder comes in as a default: FastAPI resolves these (PEP 563)
    # annotations among the module's globals, where there is no `access`.
    @app.post("/v1/events", status_code=status.HTTP_202_ACCEPTED)
    async def publish(
        event: EventIn,
        principal: Principal = Depends(access.publisher),  # noqa: B008
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> AcceptedOut:
        """Validate, store and enqueue an event; the same ``id`` twice yields the first event.

        The ``Idempotency-Key`` header is another way to send ``id``; the same
        id with a different type or data is a 422 ``idempotency_conflict``.
        """
        check_publish(principal, event.type)
        key = _idempotency_key(event.id, idempotency_key)
        accepted = await events.publish_together(event.type, event.data, key, event.to)
        return AcceptedOut(id=accepted.id, duplicate=accepted.duplicate)

    @app.post(
        "/v1/events:batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchOut,
        responses={422: {"model": BatchOut, "description": "every event was rejected"}},
    )
    def publish_batch(
        batch: BatchIn,
        principal: Principal = Depends(access.publisher),  # noqa: B008
    ) -> BatchOut | JSONResponse:
        """Publish many events at once; the answer holds one result per event, in order."""
        _check_batch_size(len(batch.events))
        results: list[BatchItemOut | None] = [None] * len(batch.events)
        incoming: list[tuple[int, events.Incoming]] = []
        for index, raw in enumerate(batch.events):
            try:
                item = EventIn.model_validate(raw)
            except ValidationError as exc:
                errors = [_item_error(index, e) for e in exc.errors(include_url=False)]
                results[index] = BatchItemOut(index=index, status="rejected", errors=errors)
                continue
            incoming.append((index, events.Incoming(item.type, item.data, item.id, item.to)))
        incoming = _publishable(principal, incoming, results)
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

    @app.get("/v1/events/{event_id}", dependencies=[Depends(access.read)])
    def show_event(event_id: str) -> EventOut:
        """The event and every notification it produced, with their attempts."""
        with session(database_url) as db:
            event = stored_events.get_event(db, event_id)
            if event is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
            data = stored_events.event_data(db, event_id)
            notifications = stored_notifications.notifications_of(db, event_id)
            attempts = stored_notifications.attempts_of(db, [n.id for n in notifications])
            counts = event.counts or stored_events.event_counts(db, event_id)
        return _event_out(event, data, counts, notifications, attempts)

    _add_event_list(app, database_url, access)


def _add_event_list(app: FastAPI, database_url: str, access: Access) -> None:
    @app.get("/v1/events", dependencies=[Depends(access.read)])
    def list_events(
        type: str | None = None,  # noqa: A002  # the query parameter's name
        statuses: Annotated[
            list[EventStatus] | None,
            Query(alias="status", description="Repeatable: any of them"),
        ] = None,
        recipient: Annotated[
            str | None,
            Query(description="One of its notifications goes to this address or recipient id"),
        ] = None,
        since: Annotated[
            str | None, Query(description="Created at or after: ISO 8601, or a duration ago (1h)")
        ] = None,
        until: Annotated[str | None, Query(description="Created before: ISO 8601")] = None,
        order: Literal["asc", "desc"] = "asc",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> EventPage:
        """Events by type, status, recipient and creation time, in ``(created_at, id)`` order."""
        start, end = time_range(since, until)
        filters = activity.EventFilter(
            type=type,
            statuses=[s.value for s in statuses or []],
            recipient=recipient,
            since=start,
            until=end,
        )
        after = decode_cursor(cursor) if cursor is not None else None
        with session(database_url) as db:
            rows = activity.event_page(db, filters, after, limit + 1, order == "desc")
            page, more = rows[:limit], len(rows) > limit
            open_ids = [e.id for e in page if e.counts is None]
            live = stored_events.statuses_of(db, open_ids) if open_ids else {}
        last = page[-1] if page else None
        return EventPage(
            items=[_summary(e, live.get(e.id, {})) for e in page],
            next_cursor=encode_cursor((last.created_at, last.id)) if more and last else None,
        )


def _summary(event: Event, live: dict[str, int]) -> EventSummary:
    """The event for a list: its kept counts once completed, else ``live`` ones."""
    return EventSummary(
        id=event.id,
        type=event.type,
        idempotency_key=event.idempotency_key,
        status=event.status,
        created_at=event.created_at,
        routed_at=event.routed_at,
        completed_at=event.completed_at,
        error=event.error,
        counts=CountsOut.model_validate(event.counts or stored_events.counts_of(live)),
    )


def _check_batch_size(items: int) -> None:
    most = get_settings().api.max_batch_items
    if items > most:
        message = f"more than {most} events in one batch (api.max_batch_items)"
        raise EventError(message, [{"loc": ["events"], "msg": message, "type": "limit_exceeded"}])


def _idempotency_key(body_id: str | None, header: str | None) -> str | None:
    """The publish's idempotency key: the body's ``id`` or the header, which must agree."""
    if header is not None and body_id is not None and header != body_id:
        message = "the Idempotency-Key header and the body's id differ; send one of them"
        raise EventError(message, [{"loc": ["id"], "msg": message, "type": "idempotency_conflict"}])
    if header is not None and not 1 <= len(header) <= 200:
        message = "the Idempotency-Key header must be 1 to 200 characters"
        raise EventError(message, [{"loc": ["id"], "msg": message, "type": "string_too_long"}])
    return body_id if body_id is not None else header


def _publishable(
    principal: Principal,
    incoming: list[tuple[int, events.Incoming]],
    results: list[BatchItemOut | None],
) -> list[tuple[int, events.Incoming]]:
    """The items ``principal`` may publish; the others are rejected in ``results``, alone."""
    allowed = []
    for index, item in incoming:
        if principal.may_publish(item.type):
            allowed.append((index, item))
            continue
        error = {
            "type": "forbidden",
            "loc": ["body", "events", index, "type"],
            "msg": publish_refusal(principal, item.type),
        }
        results[index] = BatchItemOut(index=index, status="rejected", errors=[error])
    return allowed


def _item_error(index: int, error: Any) -> dict[str, Any]:
    return {
        "loc": ["body", "events", index, *error["loc"]],
        "msg": error["msg"],
        "type": error["type"],
    }


def _event_out(
    event: Event,
    data: dict[str, Any] | None,
    counts: dict[str, Any],
    notifications: Sequence[Notification],
    attempts: Sequence[Attempt],
) -> EventOut:
    by_notification = attempt_logs(attempts)
    fields = [name for name in NotificationOut.model_fields if name != "attempt_log"]
    return EventOut(
        id=event.id,
        type=event.type,
        idempotency_key=event.idempotency_key,
        status=event.status,
        created_at=event.created_at,
        counts=CountsOut.model_validate(counts),
        completed_at=event.completed_at,
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
