"""The HTTP API: thin handlers over :mod:`hub.events` and the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from twilio.request_validator import RequestValidator

from hub import __version__, events, keys, notifications
from hub.channels import CHANNELS
from hub.errors import BrokerUnavailable, EventError, InvalidFilter, TemplateError
from hub.settings import Settings, get_settings
from hub.store import repository
from hub.store.db import session
from hub.store.models import Attempt, Event, Notification, NotificationStatus
from hub.templates import Templates


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
    sent_at: datetime | None
    attempt_log: list[AttemptOut]


class EventOut(BaseModel):
    id: str
    type: str
    idempotency_key: str | None
    status: str
    created_at: datetime
    data: dict[str, Any]
    notifications: list[NotificationOut]


TWILIO_FINAL_STATUSES = {
    "delivered": NotificationStatus.DELIVERED,
    "undelivered": NotificationStatus.UNDELIVERED,
    "failed": NotificationStatus.UNDELIVERED,
}


class _KeyCache:
    """Valid key hashes seen recently, so a publish costs no key lookup."""

    ttl_s = 60.0

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._seen: dict[str, float] = {}

    async def check(self, key: str) -> bool:
        digest = keys.hash_key(key)
        if self._seen.get(digest, 0.0) > time.monotonic():
            return True
        if not await run_in_threadpool(keys.is_valid, self._database_url, key):
            return False
        self._seen[digest] = time.monotonic() + self.ttl_s
        return True


_bearer = HTTPBearer(auto_error=False)


def create_app() -> FastAPI:
    """The API application; settings and the event catalog are checked here, at start-up."""
    settings = get_settings()
    events.catalog()
    import hub.worker  # noqa: F401  (the Celery app: fails here, at start-up, without a broker)

    # FastAPI's telemetry looks up the OpenTelemetry providers on every
    # request, a sixth of a publish's time, unless it is switched off here.
    telemetry = settings.api.opentelemetry
    app = FastAPI(
        title="hub",
        version=__version__,
        telemetry={"tracing": telemetry, "metrics": telemetry, "logs": telemetry},
    )
    app.exception_handler(EventError)(_invalid_event)
    app.exception_handler(BrokerUnavailable)(_broker_down)
    app.exception_handler(InvalidFilter)(_invalid_filter)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    authenticated = _authentication(settings.resolved_database_url)
    _add_event_routes(app, settings.resolved_database_url, authenticated)
    _add_notification_routes(app, settings, authenticated)
    _add_callback_routes(app, settings)
    _add_template_routes(app, settings, authenticated)
    return app


async def _invalid_event(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventError)
    detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]  # type: ignore[list-item]
    return JSONResponse({"detail": detail}, status_code=422)


async def _invalid_filter(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _broker_down(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{exc}; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _authentication(database_url: str) -> Callable[..., None]:
    key_cache = _KeyCache(database_url)

    async def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or not await key_cache.check(credentials.credentials):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authenticated


def _add_event_routes(app: FastAPI, database_url: str, authenticated: Callable[..., None]) -> None:
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
                errors = [{**e, "loc": ["body", "events", index, *e["loc"]]} for e in answer.errors]  # type: ignore[list-item]
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
            event = repository.get_event(db, event_id)
            if event is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
            notifications = repository.notifications_of(db, event_id)
            attempts = repository.attempts_of(db, [n.id for n in notifications])
        return _event_out(event, notifications, attempts)


def _item_error(index: int, error: Any) -> dict[str, Any]:
    return {
        "loc": ["body", "events", index, *error["loc"]],
        "msg": error["msg"],
        "type": error["type"],
    }


def _event_out(
    event: Event, notifications: Sequence[Notification], attempts: Sequence[Attempt]
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
        data=event.data,
        notifications=[
            NotificationOut(
                **{name: getattr(n, name) for name in fields},
                attempt_log=by_notification.get(n.id, []),
            )
            for n in notifications
        ],
    )


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


def _add_notification_routes(
    app: FastAPI, settings: Settings, authenticated: Callable[..., None]
) -> None:
    auth = [Depends(authenticated)]

    @app.get("/v1/notifications", dependencies=auth)
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

    @app.post("/v1/notifications/{notification_id}/retry", status_code=202, dependencies=auth)
    def retry_one(notification_id: str) -> Requeued:
        """Send a failed, unknown or undelivered notification again, with fresh attempts."""
        requeued = notifications.retry(settings, ids=[notification_id])
        if not requeued:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{notification_id!r} does not exist or is not failed, unknown or undelivered",
            )
        return Requeued(requeued=requeued)

    @app.post("/v1/notifications:retry", status_code=202, dependencies=auth)
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


def _add_callback_routes(app: FastAPI, settings: Settings) -> None:
    sms = settings.channels.sms
    database_url = settings.resolved_database_url

    @app.post("/v1/callbacks/twilio", status_code=status.HTTP_204_NO_CONTENT)
    async def twilio_status(request: Request) -> None:
        """Twilio's delivery reports: marks the SMS ``delivered`` or ``undelivered``.

        Authenticated by ``X-Twilio-Signature`` over the callback URL Twilio was
        given (``channels.sms.status_callback_url``) and the form fields.
        """
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        url = sms.status_callback_url or str(request.url)
        token = sms.auth_token.get_secret_value()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not token or not RequestValidator(token).validate(url, form, signature):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid X-Twilio-Signature")
        reported = TWILIO_FINAL_STATUSES.get(form.get("MessageStatus", ""))
        if reported is None:
            return  # queued, sent, ... are progress reports, not outcomes
        sid, code = form.get("MessageSid", ""), form.get("ErrorCode", "")
        error = f"twilio error {code}" if code else None
        with session(database_url) as db:
            sms_sent = repository.record_provider_status(db, "sms", sid, reported, error)
            if sms_sent is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no SMS with sid {sid!r}")
            if code == "21610":
                # The recipient as routed, which is what later sends are checked against.
                repository.add_opt_out(db, "sms", sms_sent.recipient, "replied STOP (21610)")


class PreviewIn(BaseModel):
    """Sample data to render a template with, as one channel would send it."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms", "slack", "webhook", "apprise"]
    event_type: str = Field("", description="Shown to the template as event.type")
    data: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(BaseModel):
    subject: str | None
    text: str
    html: str | None
    details: dict[str, str | int] = Field(description="e.g. SMS encoding and segments")


def _add_template_routes(
    app: FastAPI, settings: Settings, authenticated: Callable[..., None]
) -> None:
    templates = Templates(settings.all_template_dirs)

    @app.post("/v1/templates/{name}/preview", dependencies=[Depends(authenticated)])
    def preview(name: str, sample: PreviewIn) -> PreviewOut:
        """Render a template with sample data; SMS previews include the segment count."""
        try:
            rendered, details = templates.preview(
                name, sample.event_type, sample.data, CHANNELS[sample.channel]
            )
        except TemplateError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["path", "name"], "msg": str(exc), "type": "template_error"}],
            ) from None
        return PreviewOut(
            subject=rendered.subject, text=rendered.text, html=rendered.html, details=details
        )
