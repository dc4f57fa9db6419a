"""Cancelling what events have not sent yet: ``POST /v1/cancel``."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from hub import completion, events
from hub.api.auth import Access
from hub.keys import Principal
from hub.settings import get_settings
from hub.store import schedule
from hub.store.db import session


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cancellation_key: str = Field(min_length=1, max_length=200)


class CancelOut(BaseModel):
    cancellation_key: str
    events: list[str] = Field(description="The events published with the key that were cancelled")
    cancelled: int = Field(description="Their notifications stopped before being sent")


def add_cancel_routes(app: FastAPI, database_url: str, access: Access) -> None:
    @app.post("/v1/cancel")
    def cancel(
        body: CancelIn,
        principal: Principal = Depends(access.publisher),  # noqa: B008
    ) -> CancelOut:
        """Stop what the events published with ``cancellation_key`` have not sent yet.

        Their notifications still scheduled, queued, waiting or retrying, and
        those folded into a digest not sent yet, become ``suppressed`` with
        reason ``cancelled``; an event not routed yet routes to nothing. A
        key cancels only events of types its caller may publish; none found
        is not an error (the events may all have been sent already).
        """
        with session(database_url) as db:
            done = schedule.cancel(db, body.cancellation_key, principal.may_publish)
            completed = completion.complete(db, get_settings(), done.rows)
        completion.announce(events.publish, completed)
        return CancelOut(
            cancellation_key=body.cancellation_key,
            events=done.events,
            cancelled=done.notifications,
        )
