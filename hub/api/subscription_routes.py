"""Subscriptions at run time: ``/v1/subscriptions``.

Settings subscriptions are listed first, in file order, as ``"source":
"settings"``: read-only, so changing or deleting one gets 409. Those made
here follow, oldest first, as ``"source": "api"``. Each change is stored with
a bump of the subscriptions version, in one transaction, so every worker
routes the next event with it (see :mod:`hub.routing`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Response, status
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from hub.api.auth import Access
from hub.routing import stored_definition, subscription_errors
from hub.settings import Settings, Subscription, get_settings
from hub.store import subscriptions as stored
from hub.store.db import session
from hub.store.models import StoredSubscription
from hub.templates import Library, Templates


class SubscriptionOut(BaseModel):
    name: str
    source: Literal["settings", "api"]
    definition: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a page starts: at an index of the settings subscriptions, else after
    a stored one's ``(created_at, name)`` (the first stored one when None)."""

    settings_index: int | None = 0
    after: tuple[datetime, str] | None = None


def add_subscription_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    subscriptions = _Subscriptions(settings)
    read, admin = [Depends(access.read)], [Depends(access.admin)]

    @app.get("/v1/subscriptions", dependencies=read)
    def list_subscriptions(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None
    ) -> SubscriptionList:
        """Settings subscriptions (read-only), then those made through the API, oldest first."""
        return subscriptions.page(limit, _position(cursor))

    @app.get("/v1/subscriptions/{name:path}", dependencies=read)
    def get_subscription(name: str) -> SubscriptionOut:
        """One subscription, from settings or the API."""
        return subscriptions.get(name)

    @app.post("/v1/subscriptions", status_code=201, dependencies=admin)
    def create_subscription(subscription: Subscription) -> SubscriptionOut:
        """Add a subscription; 409 when its name is taken, here or in settings."""
        return subscriptions.create(subscription)

    @app.put("/v1/subscriptions/{name:path}", dependencies=admin)
    def replace_subscription(name: str, subscription: Subscription) -> SubscriptionOut:
        """Replace a subscription made through the API with the one in the body."""
        return subscriptions.replace(name, subscription)

    @app.delete("/v1/subscriptions/{name:path}", status_code=204, dependencies=admin)
    def delete_subscription(name: str) -> Response:
        """Delete a subscription made through the API; every worker's next event goes without it."""
        subscriptions.delete(name)
        return Response(status_code=204)


class _Subscriptions:
    """What the routes do, over the settings' subscriptions and the store's."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.resolved_database_url
        self._load(settings)

    def _load(self, settings: Settings) -> None:
        self._settings = settings
        self._templates = Templates()
        self._fixed = {subscription.name: subscription for subscription in settings.subscriptions}

    def _current(self) -> None:
        """Follow ``hub reload``: the settings this process adopted last (hub.api.follow)."""
        if (settings := get_settings()) is not self._settings:
            self._load(settings)

    def page(self, limit: int, position: _Position) -> SubscriptionList:
        self._current()
        fixed = self._settings.subscriptions
        items: list[SubscriptionOut] = []
        if (start := position.settings_index) is not None:
            items = [_from_settings(subscription) for subscription in fixed[start : start + limit]]
            if start + limit < len(fixed):
                return SubscriptionList(items=items, next_cursor=_cursor(_Position(start + limit)))
        room = limit - len(items)
        with session(self._url) as db:
            rows = stored.page(db, position.after, room + 1)
        items += [_from_store(row) for row in rows[:room]]
        if len(rows) <= room:
            return SubscriptionList(items=items, next_cursor=None)
        last = (rows[room - 1].created_at, rows[room - 1].name) if room else position.after
        return SubscriptionList(items=items, next_cursor=_cursor(_Position(None, last)))

    def get(self, name: str) -> SubscriptionOut:
        self._current()
        if name in self._fixed:
            return _from_settings(self._fixed[name])
        with session(self._url) as db:
            row = stored.subscription(db, name)
        if row is None:
            raise _unknown(name)
        return _from_store(row)

    def create(self, subscription: Subscription) -> SubscriptionOut:
        definition = self._checked(subscription)
        try:
            with session(self._url) as db:
                row = stored.add(db, subscription.name, definition)
        except IntegrityError:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"a subscription named {subscription.name!r} exists"
            ) from None
        return _from_store(row)

    def replace(self, name: str, subscription: Subscription) -> SubscriptionOut:
        self._current()
        if name in self._fixed:
            raise _read_only(name)
        if subscription.name != name:
            message = f"must be {name!r}, the name in the path (a name does not change)"
            raise _unprocessable([_error(["body", "name"], message, "name_mismatch")])
        definition = self._checked(subscription)
        with session(self._url) as db:
            row = stored.replace(db, name, definition)
        if row is None:
            raise _unknown(name)
        return _from_store(row)

    def delete(self, name: str) -> None:
        self._current()
        if name in self._fixed:
            raise _read_only(name)
        with session(self._url) as db:
            removed = stored.remove(db, name)
        if not removed:
            raise _unknown(name)

    def _checked(self, subscription: Subscription) -> dict[str, Any]:
        """Its definition to store: 409 for a settings name, 422 naming each bad field."""
        self._current()
        if subscription.name in self._fixed:
            raise _read_only(subscription.name)
        with session(self._url) as db:
            current = Library().load(db)
        errors = subscription_errors(
            subscription, self._settings, self._templates, current.variants
        )
        if errors:
            raise _unprocessable([{**error, "loc": ["body", *error["loc"]]} for error in errors])
        return stored_definition(subscription)


def _from_settings(subscription: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        name=subscription.name, source="settings", definition=subscription.model_dump(mode="json")
    )


def _from_store(row: StoredSubscription) -> SubscriptionOut:
    # Shown whole, defaults too, as routing reads it; the store keeps what was
    # given, so one a newer hub no longer accepts is shown as stored.
    given = {**row.definition, "name": row.name}
    try:
        definition = Subscription.model_validate(given).model_dump(mode="json")
    except ValidationError:
        definition = given
    return SubscriptionOut(
        name=row.name,
        source="api",
        definition=definition,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _cursor(position: _Position) -> str:
    after = position.after
    payload = [position.settings_index, after and [after[0].isoformat(), after[1]]]
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _position(cursor: str | None) -> _Position:
    """Where ``cursor`` points; 422 naming it when it is none of ours."""
    if cursor is None:
        return _Position()
    try:
        index, after = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(index, int) and index >= 0 and after is None:
            return _Position(index)
        if index is None and after is None:
            return _Position(None)
        if index is None:
            created_at, name = after
            return _Position(None, (datetime.fromisoformat(created_at), str(name)))
    except (ValueError, TypeError, UnicodeDecodeError):
        pass  # binascii.Error and JSONDecodeError are ValueErrors
    raise _unprocessable(
        [_error(["query", "cursor"], "not a cursor this list gave", "invalid_cursor")]
    )


def _error(loc: list[str], message: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": kind}


def _unprocessable(errors: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)


def _read_only(name: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"subscription {name!r} comes from the settings file and is read-only here; "
        "change it there",
    )


def _unknown(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no subscription named {name!r}")
