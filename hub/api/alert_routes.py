"""Failure alerts and silences: ``/v1/alerts``, ``/v1/alerts/ack/{token}`` and ``/v1/silences``.

Listing and showing alerts takes the ``read`` scope; acknowledging,
resolving and silences take ``admin``, and record the key's name as who did
it. The ack link each alert carries (:func:`hub.links.ack_url`) takes no key:
its signed token names one group. A ``GET`` on it shows the alert and a
button that ``POST``s; only the ``POST`` acknowledges, because chat unfurlers
and mail scanners fetch every link. A token the hub did not sign gets 404.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Annotated, Any, Literal, NoReturn

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from hub import links
from hub.api.auth import Access
from hub.api.cursors import decode_cursor, encode_cursor
from hub.api.event_routes import AttemptOut, NotificationOut
from hub.api.unsubscribe_routes import PAGE_HEADERS
from hub.keys import Principal
from hub.settings import Settings
from hub.store import alert_queries as queries
from hub.store.db import session
from hub.store.models import AlertStatus, utcnow

Status = Literal["firing", "acknowledged", "resolved", "silenced"]
# Who acknowledged an alert through its link: the link names no one.
ACK_LINK = "ack-link"
NO_ACK_LINK = "no such ack link"
SILENCE_EXAMPLE = {
    "matchers": {"data.service": "billing"},
    "ends_at": "2030-01-01T00:00:00Z",
    "comment": "billing is being migrated",
}


class AlertOut(BaseModel):
    id: str
    subscription: str
    status: Status
    count: int = Field(description="Events folded into the group")
    labels: dict[str, Any] = Field(description="The group's value at each group_by path")
    messages: list[str] = Field(description="Up to 5 distinct messages, first seen first")
    first_seen: datetime
    last_seen: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    silence_id: str | None = Field(description="The silence that matched, when silenced")
    notifications_sent: int
    escalation_step: int = Field(description="Escalation steps taken")
    created_at: datetime


class AlertList(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class GroupEventOut(BaseModel):
    id: str
    type: str
    at: datetime = Field(description="When it was folded into the group")


class AlertNotificationOut(NotificationOut):
    event_id: str
    created_at: datetime


class AlertHistoryOut(AlertOut):
    events: list[GroupEventOut]
    notifications: list[AlertNotificationOut]


class SilenceIn(BaseModel):
    """Alerts whose events match every matcher send nothing until ``ends_at`` (recorded still)."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[str, Any] = Field(
        description='Paths to values ({"data.service": "billing"}) or to filter operators'
    )
    # Plain datetimes: a naive one is refused with the other checks, naming its field.
    starts_at: datetime | None = Field(None, description="Default: now")
    ends_at: datetime = Field(description="ISO 8601 with an offset, in the future")
    comment: str = Field("", max_length=2000)


class SilenceOut(BaseModel):
    id: str
    matchers: dict[str, Any]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str | None
    created_at: datetime
    active: bool = Field(description="Whether it is in force now")


class SilenceList(BaseModel):
    items: list[SilenceOut]
    next_cursor: str | None


def add_alert_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    url = settings.resolved_database_url
    # The ack link's routes come first: /v1/alerts/ack/{token} is no alert id.
    _add_ack_link(app, settings)
    _add_alerts(app, url, access)
    _add_silences(app, url, access)


def _add_alerts(app: FastAPI, url: str, access: Access) -> None:
    read = [Depends(access.read)]

    @app.get("/v1/alerts", dependencies=read)
    def list_alerts(
        alert_status: Annotated[Status | None, Query(alias="status")] = None,
        subscription: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> AlertList:
        """Alert groups, oldest first, of one status if given (``?status=firing``)."""
        after = decode_cursor(cursor) if cursor is not None else None
        with session(url) as db:
            rows = queries.alert_page(db, after, limit + 1, alert_status, subscription)
        page = rows[:limit]
        more = len(rows) > limit
        return AlertList(
            items=[_alert_out(row) for row in page],
            next_cursor=encode_cursor((page[-1].created_at, page[-1].id)) if more else None,
        )

    @app.get("/v1/alerts/{alert_id}", dependencies=read)
    def show_alert(alert_id: str) -> AlertHistoryOut:
        """The group and its history: every event in it, every notification sent for it."""
        with session(url) as db:
            row = _found(queries.alert(db, alert_id), alert_id)
            history = queries.history(db, alert_id)
        return _history_out(row, history)

    @app.post("/v1/alerts/{alert_id}/ack")
    def acknowledge(
        alert_id: str,
        principal: Principal = Depends(access.admin),  # noqa: B008
    ) -> AlertOut:
        """Acknowledge a firing alert: its repeats and escalation stop. 409 unless firing."""
        with session(url) as db:
            change = queries.acknowledge(db, alert_id, principal.name, utcnow())
        return _answer(change, alert_id)

    @app.post("/v1/alerts/{alert_id}/resolve")
    def resolve(
        alert_id: str,
        principal: Principal = Depends(access.admin),  # noqa: B008
    ) -> AlertOut:
        """Resolve an alert by hand; one that notified sends its "resolved" notification."""
        with session(url) as db:
            change = queries.resolve(db, alert_id, principal.name, utcnow())
        return _answer(change, alert_id)


def _answer(change: queries.Change, alert_id: str) -> AlertOut:
    """The group after a change: 404 if there is none, 409 with the refusal."""
    row = _found(change.alert, alert_id)
    if change.refusal is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, change.refusal)
    return _alert_out(row)


def _add_silences(app: FastAPI, url: str, access: Access) -> None:
    read = [Depends(access.read)]

    @app.post("/v1/silences", status_code=status.HTTP_201_CREATED)
    def create_silence(
        silence: Annotated[SilenceIn, Body(examples=[SILENCE_EXAMPLE])],
        principal: Principal = Depends(access.admin),  # noqa: B008
    ) -> SilenceOut:
        """Silence alerts whose events match every matcher, from now (or ``starts_at``) on.

        New groups of matching events are recorded as ``silenced`` and send
        nothing. Matchers take a path to a value (``eq``), or to filter operators.
        """
        now = utcnow()
        starts_at = silence.starts_at or now
        if problems := queries.silence_problems(silence.matchers, starts_at, silence.ends_at, now):
            _unprocessable([{**p, "loc": ["body", *p["loc"]]} for p in problems])
        with session(url) as db:
            row = queries.add_silence(
                db,
                silence.matchers,
                starts_at,
                silence.ends_at,
                silence.comment,
                principal.name,
                now,
            )
        return _silence_out(row, now)

    @app.get("/v1/silences", dependencies=read)
    def list_silences(
        active: Annotated[bool, Query(description="Only those in force now")] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> SilenceList:
        """Silences, oldest first, ended ones too (they are history); ``?active=true``: in force."""
        after = decode_cursor(cursor) if cursor is not None else None
        now = utcnow()
        with session(url) as db:
            rows = queries.silence_page(db, after, limit + 1, now if active else None)
        page = rows[:limit]
        more = len(rows) > limit
        return SilenceList(
            items=[_silence_out(row, now) for row in page],
            next_cursor=encode_cursor((page[-1].created_at, page[-1].id)) if more else None,
        )

    @app.delete(
        "/v1/silences/{silence_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        dependencies=[Depends(access.admin)],
    )
    def end_silence(silence_id: str) -> Response:
        """End a silence now; it stays listed. Ending an ended one changes nothing."""
        with session(url) as db:
            found = queries.end_silence(db, silence_id, utcnow())
        if not found:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no silence {silence_id!r}")
        return Response(status_code=status.HTTP_204_NO_CONTENT)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>Alert</title></head>
<body><h1>Alert</h1>{alert}{body}</body></html>
"""
_ALERT = """<dl><dt>Subscription</dt><dd>{subscription}</dd>
<dt>Status</dt><dd>{status}</dd>
<dt>Count</dt><dd>{count}</dd>
<dt>First seen</dt><dd>{first_seen}</dd><dt>Last seen</dt><dd>{last_seen}</dd>
{labels}</dl>{messages}"""
_ASK = """<form method="post" action="{token}">
<button type="submit">Acknowledge</button></form>"""
_DONE = "<p>Acknowledged. Its repeats and escalation stop.</p>"
_ACKED = "<p>Already acknowledged by <strong>{by}</strong> at {at}.</p>"
_CLOSED = "<p>This alert is {status}: there is nothing to acknowledge.</p>"


def _add_ack_link(app: FastAPI, settings: Settings) -> None:
    links.secret_key(settings)  # a missing or unusable key fails here, at start-up
    url = settings.resolved_database_url

    @app.get("/v1/alerts/ack/{token}", response_class=HTMLResponse)
    def confirm_ack(token: str) -> Response:
        """The alert and a button that POSTs here. Nothing changes on a GET."""
        alert_id = _read_ack(settings, token)
        with session(url) as db:
            row = _found(queries.alert(db, alert_id), alert_id, NO_ACK_LINK)
        # The action is relative: the same URL, whatever prefix a proxy serves it under.
        ask = _ASK.format(token=escape(token)) if row.status == AlertStatus.FIRING else ""
        return _page(row, ask or _state(row))

    @app.post("/v1/alerts/ack/{token}", response_class=HTMLResponse)
    def ack_by_link(token: str) -> Response:
        """Acknowledge the token's alert; one acknowledged already is shown as it is."""
        alert_id = _read_ack(settings, token)
        with session(url) as db:
            change = queries.acknowledge(db, alert_id, ACK_LINK, utcnow())
        row = _found(change.alert, alert_id, NO_ACK_LINK)
        return _page(row, _DONE if change.refusal is None else _state(row))


def _read_ack(settings: Settings, token: str) -> str:
    """The alert id of ``token``; 404 for any token the hub did not sign."""
    alert_id = links.read_ack(settings, token)
    if alert_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_ACK_LINK)
    return alert_id


def _state(row: queries.AlertRow) -> str:
    """Why a group not firing has no button."""
    if row.status == AlertStatus.ACKNOWLEDGED:
        by = escape(row.acknowledged_by or "someone")
        return _ACKED.format(by=by, at=_moment(row.acknowledged_at))
    return _CLOSED.format(status=escape(row.status))


def _page(row: queries.AlertRow, body: str) -> HTMLResponse:
    labels = "".join(
        f"<dt>{escape(path)}</dt><dd>{escape(json.dumps(value))}</dd>"
        for path, value in row.labels.items()
    )
    messages = "".join(f"<li>{escape(message)}</li>" for message in row.messages)
    alert = _ALERT.format(
        subscription=escape(row.subscription),
        status=escape(row.status),
        count=row.count,
        first_seen=_moment(row.first_seen),
        last_seen=_moment(row.last_seen),
        labels=labels,
        messages=f"<ul>{messages}</ul>" if messages else "",
    )
    return HTMLResponse(_PAGE.format(alert=alert, body=body), headers=PAGE_HEADERS)


def _moment(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _found(row: queries.AlertRow | None, alert_id: str, missing: str = "") -> queries.AlertRow:
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, missing or f"no alert {alert_id!r}")
    return row


def _alert_out(row: queries.AlertRow) -> AlertOut:
    return AlertOut.model_validate(row, from_attributes=True)


def _history_out(row: queries.AlertRow, history: queries.History) -> AlertHistoryOut:
    by_notification: dict[str, list[AttemptOut]] = {}
    for attempt in history.attempts:
        by_notification.setdefault(attempt.notification_id, []).append(
            AttemptOut.model_validate(attempt, from_attributes=True)
        )
    fields = [name for name in AlertNotificationOut.model_fields if name != "attempt_log"]
    return AlertHistoryOut(
        **_alert_out(row).model_dump(),
        events=[GroupEventOut(id=e.id, type=e.type, at=e.at) for e in history.events],
        notifications=[
            AlertNotificationOut(
                **{name: getattr(n, name) for name in fields},
                attempt_log=by_notification.get(n.id, []),
            )
            for n in history.notifications
        ],
    )


def _silence_out(row: queries.SilenceRow, now: datetime) -> SilenceOut:
    return SilenceOut(
        id=row.id,
        matchers=row.matchers,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        comment=row.comment,
        created_by=row.created_by,
        created_at=row.created_at,
        active=row.active(now),
    )


def _unprocessable(errors: list[dict[str, Any]]) -> NoReturn:
    # As FastAPI's own 422: its handler escapes input a message may quote.
    raise RequestValidationError(errors)
