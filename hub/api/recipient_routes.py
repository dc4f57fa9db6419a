"""Recipients and topics: ``/v1/recipients`` and ``/v1/topics``, all with the ``admin`` scope.

Thin over :mod:`hub.recipients`, which checks every field; its errors are
answered as FastAPI's 422s with ``loc`` starting at ``path`` or ``body``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from hub import recipients
from hub.api.auth import Access
from hub.api.cursors import decode_cursor, encode_cursor
from hub.recipients import MAX_BATCH, RecipientError
from hub.store.recipients import RecipientRow

RECIPIENT_EXAMPLE = {
    "email": "ada@example.com",
    "phone": "+14155552671",
    "slack": "U024BE7LH",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "data": {"plan": "pro"},
    "preferences": {
        "channels": {"sms": False},
        "categories": {"marketing": False},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
    },
}


class RecipientOut(BaseModel):
    id: str
    email: str | None
    phone: str | None = Field(description="E.164")
    slack: str | None = Field(description="A Slack member or channel id")
    locale: str | None
    timezone: str | None = Field(description="An IANA time zone")
    data: dict[str, Any]
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class BatchIn(BaseModel):
    """Up to 1,000 recipients, each with its ``id``; each is checked on its own."""

    model_config = ConfigDict(extra="forbid")

    # Items stay raw here so one malformed item is reported alone, not the batch.
    recipients: list[Any] = Field(json_schema_extra={"maxItems": MAX_BATCH})


class BatchItemOut(BaseModel):
    id: str | None = Field(description="The item's id, if it had a usable one")
    status: Literal["ok", "invalid"]
    errors: list[dict[str, Any]] = []


class BatchOut(BaseModel):
    items: list[BatchItemOut]


class MembersIn(BaseModel):
    """Recipient ids to add to the topic; those already in it are left as they are."""

    model_config = ConfigDict(extra="forbid")

    # Raw for the same reason as a batch: each bad id is named at its index.
    recipients: list[Any] = Field(json_schema_extra={"maxItems": MAX_BATCH})


class MembersAdded(BaseModel):
    topic: str
    added: int = Field(description="How many were not members before")


class MemberOut(BaseModel):
    id: str = Field(description="The recipient's id")
    added_at: datetime


class MemberList(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


def add_recipient_routes(app: FastAPI, access: Access) -> None:
    admin = [Depends(access.admin)]
    _add_recipients(app, admin)
    _add_topics(app, admin)


def _add_recipients(app: FastAPI, admin: list[Any]) -> None:
    @app.put("/v1/recipients:batch", dependencies=admin)
    def put_recipients(batch: BatchIn) -> BatchOut:
        """Create or merge up to 1,000 recipients in one transaction; invalid ones alone are not."""
        if len(batch.recipients) > MAX_BATCH:
            _unprocessable(
                [
                    {
                        "type": "limit_exceeded",
                        "loc": ["body", "recipients"],
                        "msg": f"more than {MAX_BATCH} recipients in one batch",
                    }
                ]
            )
        return _upsert_batch(batch.recipients)

    @app.put(
        "/v1/recipients/{recipient_id:path}",
        dependencies=admin,
        responses={201: {"model": RecipientOut, "description": "Created"}},
    )
    def put_recipient(
        recipient_id: str,
        response: Response,
        fields: Annotated[dict[str, Any], Body(examples=[RECIPIENT_EXAMPLE])],
    ) -> RecipientOut:
        """Create a recipient (201) or merge into it (200): absent fields are kept, null clears.

        ``data`` and ``preferences`` merge key by key (JSON Merge Patch, RFC 7396).
        """
        try:
            change = recipients.parse(fields, recipient_id)
        except RecipientError as exc:
            _unprocessable(_located(exc, {"id": ["path", "recipient_id"]}))
        [(row, created)] = recipients.upsert([change])
        if created:
            response.status_code = status.HTTP_201_CREATED
        return _out(row)

    @app.get("/v1/recipients/{recipient_id:path}", dependencies=admin)
    def get_recipient(recipient_id: str) -> RecipientOut:
        """The stored recipient."""
        row = recipients.get(recipient_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recipient {recipient_id!r}")
        return _out(row)

    @app.delete(
        "/v1/recipients/{recipient_id:path}",
        dependencies=admin,
        status_code=status.HTTP_204_NO_CONTENT,
    )
    def delete_recipient(recipient_id: str) -> None:
        """Delete a recipient and its topic memberships."""
        if not recipients.delete(recipient_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recipient {recipient_id!r}")


def _add_topics(app: FastAPI, admin: list[Any]) -> None:
    @app.put("/v1/topics/{key}/recipients", dependencies=admin)
    def add_members(key: str, members: MembersIn) -> MembersAdded:
        """Add recipients to a topic (a union: adding a member twice changes nothing).

        Every id must name a stored recipient; otherwise 422 lists the unknown
        ones and nothing is added.
        """
        try:
            added = recipients.add_to_topic(key, members.recipients)
        except RecipientError as exc:
            _unprocessable(_located(exc, {"topic": ["path", "key"]}))
        return MembersAdded(topic=key, added=added)

    @app.delete(
        "/v1/topics/{key}/recipients/{recipient_id:path}",
        dependencies=admin,
        status_code=status.HTTP_204_NO_CONTENT,
    )
    def remove_member(key: str, recipient_id: str) -> None:
        """Take one recipient out of a topic."""
        if not recipients.remove_from_topic(key, recipient_id):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"{recipient_id!r} is not a member of topic {key!r}"
            )

    @app.get("/v1/topics/{key}", dependencies=admin)
    def list_members(
        key: str,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> MemberList:
        """A topic's members, oldest first; a topic nobody joined lists none."""
        after = decode_cursor(cursor) if cursor is not None else None
        page, last = recipients.topic_page(key, after, limit)
        return MemberList(
            items=[MemberOut(id=m.recipient_id, added_at=m.created_at) for m in page],
            next_cursor=encode_cursor(last) if last is not None else None,
        )


def _upsert_batch(items: list[Any]) -> BatchOut:
    """Check every item, then store the valid ones together: one answer per item, in order."""
    answers: list[BatchItemOut] = []
    changes = []
    for index, item in enumerate(items):
        try:
            changes.append(recipients.parse(item))
        except RecipientError as exc:
            errors = [{**e, "loc": ["body", "recipients", index, *e["loc"]]} for e in exc.errors]
            answers.append(BatchItemOut(id=_usable_id(item), status="invalid", errors=errors))
            continue
        answers.append(BatchItemOut(id=changes[-1].id, status="ok"))
    if changes:
        recipients.upsert(changes)
    return BatchOut(items=answers)


def _usable_id(item: Any) -> str | None:
    """An invalid item's id, to answer it by; None if the id itself is what is wrong."""
    given = item.get("id") if isinstance(item, dict) else None
    return given if isinstance(given, str) and not recipients.key_errors(given) else None


def _located(exc: RecipientError, in_path: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``exc``'s errors located in the request: a path parameter's, else the body's."""
    located = []
    for error in exc.errors:
        first, *rest = error["loc"] or [""]
        where = [*in_path[first], *rest] if first in in_path else ["body", *error["loc"]]
        located.append({**error, "loc": where})
    return located


def _unprocessable(errors: list[dict[str, Any]]) -> NoReturn:
    # As FastAPI's own 422: its handler escapes input a message may quote, such as a lone surrogate.
    raise RequestValidationError(errors)


def _out(row: RecipientRow) -> RecipientOut:
    return RecipientOut.model_validate(row, from_attributes=True)
