"""The one publish path: validate against the catalog, store, enqueue routing.

The CLI, the Python client (through the API) and the ``hub.publish`` Celery
task call :func:`publish`; the API calls :func:`publish_together`, the same
path with concurrent publishes grouped.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy.exc import IntegrityError

from hub.errors import BrokerUnavailable, ConfigError, EventError
from hub.settings import EventType, get_settings
from hub.store import events as stored_events
from hub.store.db import session
from hub.store.models import Event
from hub.worker import enqueue_routes

_REQUIRED = re.compile(r"^'(.+)' is a required property$")


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to a publish: the event's id, and whether it was seen before."""

    id: str
    duplicate: bool = False


class Catalog:
    """The known event types and a compiled validator for each one's data."""

    def __init__(self, events: Mapping[str, EventType]) -> None:
        self._validators: dict[str, Draft202012Validator] = {}
        # Schemas compiled to Python by fastjsonschema: ~20x faster on the
        # common case, valid data. jsonschema stays the reference: it lists
        # the errors, and has the last word when the two disagree.
        self._fast: dict[str, Callable[[Any], Any]] = {}
        for name, event_type in events.items():
            try:
                Draft202012Validator.check_schema(event_type.data_schema)
            except SchemaError as exc:
                raise ConfigError(f"events.{name}.schema: {exc.message}") from exc
            self._validators[name] = Draft202012Validator(
                event_type.data_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            with suppress(fastjsonschema.JsonSchemaDefinitionException):
                self._fast[name] = fastjsonschema.compile(event_type.data_schema)

    @property
    def types(self) -> list[str]:
        return sorted(self._validators)

    def validate(self, event_type: str, data: Any) -> None:
        """Raise :class:`EventError` listing every field of ``data`` that is wrong."""
        validator = self._validators.get(event_type)
        if validator is None:
            known = ", ".join(self.types) or "none"
            raise EventError(
                f"unknown event type {event_type!r}",
                [
                    {
                        "loc": ["type"],
                        "msg": f"unknown event type {event_type!r}; known types: {known}",
                        "type": "unknown_event_type",
                    }
                ],
            )
        if (fast := self._fast.get(event_type)) is not None:
            with suppress(fastjsonschema.JsonSchemaException):
                fast(data)
                return
        errors = []
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
            loc: list[str | int] = ["data", *error.absolute_path]
            if error.validator == "required" and (missing := _REQUIRED.match(error.message)):
                loc.append(missing.group(1))
            errors.append({"loc": loc, "msg": error.message, "type": str(error.validator)})
        if errors:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in errors)
            raise EventError(f"invalid {event_type} event: {fields}", errors)


@cache
def catalog() -> Catalog:
    """The process's catalog, built from settings on first use."""
    return Catalog(get_settings().events)


def new_event_id() -> str:
    """A time-ordered unique id: 12 hex digits of milliseconds, 16 random."""
    return f"evt_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def publish(
    event_type: str,
    data: Any,
    idempotency_key: str | None = None,
    *,
    keep_if_broker_down: bool = False,
) -> Accepted:
    """Validate, store and enqueue one event.

    The event is durable before this returns. If the broker refused the
    routing task, the event is removed again and :class:`BrokerUnavailable`
    raised, so a client can safely retry the whole publish; if its answer was
    lost (the broker may have the task), the event stays and is accepted, as
    the sweeper routes it either way. Publishers inside
    the hub, which cannot retry, pass ``keep_if_broker_down``: the event stays
    and the sweeper enqueues it once the broker is back.
    """
    event = _validated(event_type, data, idempotency_key)
    return _store_and_enqueue([event], keep_if_broker_down=keep_if_broker_down)[0]


async def publish_together(
    event_type: str, data: Any, idempotency_key: str | None = None
) -> Accepted:
    """:func:`publish` for many concurrent callers on one event loop (the API).

    Publishes that arrive while an earlier group is being stored share one
    transaction and one broker message (see :class:`_Coalescer`); each caller
    still returns only once its own event is stored and enqueued.
    """
    event = _validated(event_type, data, idempotency_key)
    return await _coalescer().submit(event)


# Deeper data than any event needs; every worker must be able to decode what is accepted.
MAX_DATA_DEPTH = 32


def _validated(event_type: str, data: Any, idempotency_key: str | None) -> Event:
    if _deeper_than(data, MAX_DATA_DEPTH):
        raise EventError(
            "event data nested too deep",
            [
                {
                    "loc": ["data"],
                    "msg": f"nested deeper than {MAX_DATA_DEPTH} levels of objects and arrays",
                    "type": "limit_exceeded",
                }
            ],
        )
    catalog().validate(event_type, data)
    return Event(id=new_event_id(), type=event_type, data=data, idempotency_key=idempotency_key)


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether objects and arrays in ``data`` nest deeper than ``limit`` (no recursion)."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _store_and_enqueue(events: list[Event], keep_if_broker_down: bool = False) -> list[Accepted]:
    """Store events in one transaction and route them with few broker messages.

    If the broker refuses, the new events are removed again (unless a worker
    already began routing them, or ``keep_if_broker_down``: the sweeper then
    enqueues them later) and :class:`BrokerUnavailable` raised.
    """
    url = get_settings().resolved_database_url
    with session(url) as db:
        stored = stored_events.add_events(db, events)
    created = [event.id for event, new in stored if new]
    try:
        enqueue_routes(created)
    except BrokerUnavailable as exc:
        # An answer that never came may hide a message the broker took: then
        # the events stay (the sweeper routes them; routing is idempotent) and
        # the caller is told they were accepted, which is true either way.
        if not (keep_if_broker_down or exc.maybe_taken) and _forget(url, created):
            raise
    return [Accepted(event.id, duplicate=not new) for event, new in stored]


class _Coalescer:
    """Joins publishes that arrive together into one transaction and one broker message.

    Group commit: a publish that finds no group being stored starts one at
    once; publishes that arrive while a group is being stored wait and make
    the next group together. Quiet traffic pays no delay; under load the
    groups grow by themselves. ``linger_s`` adds a fixed wait before each group
    for larger groups still. Each caller's future gets its own answer, and no
    thread waits per request.
    """

    def __init__(self, linger_s: float, max_events: int = 200) -> None:
        self._linger_s = linger_s
        self._max_events = max_events
        self._pending: list[tuple[Event, asyncio.Future[Accepted]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._storing: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> Accepted:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Accepted] = loop.create_future()
        self._pending.append((event, answer))
        if self._storing is None and self._timer is None:
            if self._linger_s and len(self._pending) < self._max_events:
                self._timer = loop.call_later(self._linger_s, self._flush)
            else:
                self._flush()
        return await answer

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group = self._pending[: self._max_events]
        del self._pending[: self._max_events]
        self._storing = asyncio.ensure_future(self._store(group))
        self._storing.add_done_callback(self._next)

    def _next(self, _: asyncio.Task[None]) -> None:
        self._storing = None
        if self._pending:
            self._flush()

    @staticmethod
    async def _store(group: list[tuple[Event, asyncio.Future[Accepted]]]) -> None:
        try:
            answers = await asyncio.to_thread(_store_and_enqueue, [event for event, _ in group])
        except Exception as exc:
            for _, answer in group:
                if not answer.done():  # its caller may have gone (client disconnected)
                    answer.set_exception(exc)
        else:
            for (_, answer), accepted in zip(group, answers, strict=True):
                if not answer.done():
                    answer.set_result(accepted)


@cache
def _coalescer() -> _Coalescer:
    return _Coalescer(get_settings().api.publish_linger_ms / 1000)


def _forget(url: str, event_ids: list[str]) -> bool:
    """Remove events whose enqueue failed; False if routing already began (keep them then).

    A broker can fail after it did take the message, so a worker may be routing
    the event already: its notifications then hold the event in place.
    """
    try:
        with session(url) as db:
            stored_events.delete_unrouted_events(db, event_ids)
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event of a batch, as received."""

    type: str
    data: Any
    idempotency_key: str | None = None


def publish_many(incoming: Sequence[Incoming]) -> list[Accepted | EventError]:
    """Validate, store and enqueue a batch: one transaction, one broker message per chunk.

    Each item gets its own answer: accepted, a duplicate of an earlier event,
    or the :class:`EventError` that rejected it. Like :func:`publish`, if the
    broker cannot take the batch nothing of it is kept and
    :class:`BrokerUnavailable` is raised.
    """
    rejected: dict[int, EventError] = {}
    valid: list[Event] = []
    for index, item in enumerate(incoming):
        try:
            valid.append(_validated(item.type, item.data, item.idempotency_key))
        except EventError as exc:
            rejected[index] = exc
    stored = iter(_store_and_enqueue(valid) if valid else [])
    return [rejected[i] if i in rejected else next(stored) for i in range(len(incoming))]
