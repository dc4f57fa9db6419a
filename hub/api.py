"""The HTTP API: thin handlers over :mod:`hub.events` and the store."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from hub import __version__, events, keys
from hub.errors import BrokerUnavailable, EventError
from hub.settings import get_settings
from hub.store import repository
from hub.store.db import session


class EventIn(BaseModel):
    """A domain event as publishers send it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, examples=["user.registered"])
    id: str | None = Field(
        None, min_length=1, max_length=200, description="Idempotency key chosen by the publisher"
    )
    data: dict[str, Any] = Field(default_factory=dict)


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


class _KeyCache:
    """Valid key hashes seen recently, so a publish costs no key lookup."""

    ttl_s = 60.0

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def check(self, database_url: str, key: str) -> bool:
        digest = keys.hash_key(key)
        if self._seen.get(digest, 0.0) > time.monotonic():
            return True
        if not keys.is_valid(database_url, key):
            return False
        self._seen[digest] = time.monotonic() + self.ttl_s
        return True


_bearer = HTTPBearer(auto_error=False)


def create_app() -> FastAPI:
    """The API application; settings and the event catalog are checked here, at start-up."""
    settings = get_settings()
    events.catalog()
    database_url = settings.resolved_database_url
    key_cache = _KeyCache()
    app = FastAPI(title="hub", version=__version__)

    def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or not key_cache.check(database_url, credentials.credentials):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(EventError)
    async def _invalid_event(_: Request, exc: EventError) -> JSONResponse:
        detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]  # type: ignore[list-item]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(BrokerUnavailable)
    async def _broker_down(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{exc}; nothing was stored, retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.post(
        "/v1/events",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(authenticated)],
    )
    def publish(event: EventIn) -> AcceptedOut:
        """Validate, store and enqueue an event; the same ``id`` twice yields the first event."""
        accepted = events.publish(event.type, event.data, event.id)
        return AcceptedOut(id=accepted.id, duplicate=accepted.duplicate)

    @app.get("/v1/events/{event_id}", dependencies=[Depends(authenticated)])
    def show_event(event_id: str) -> EventOut:
        """The event and every notification it produced, with their attempts."""
        with session(database_url) as db:
            event = repository.get_event(db, event_id)
            if event is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
            notifications = repository.notifications_of(db, event_id)
            attempts = repository.attempts_of(db, [n.id for n in notifications])
        by_notification: dict[str, list[AttemptOut]] = {}
        for attempt in attempts:
            by_notification.setdefault(attempt.notification_id, []).append(
                AttemptOut.model_validate(attempt, from_attributes=True)
            )
        return EventOut(
            id=event.id,
            type=event.type,
            idempotency_key=event.idempotency_key,
            status=event.status,
            created_at=event.created_at,
            data=event.data,
            notifications=[
                NotificationOut.model_validate(
                    {
                        **{
                            c: getattr(n, c)
                            for c in NotificationOut.model_fields
                            if c != "attempt_log"
                        },
                        "attempt_log": by_notification.get(n.id, []),
                    }
                )
                for n in notifications
            ],
        )

    return app
