"""The one publish path: validate against the catalog, store, enqueue routing.

The CLI, the Python client (through the API) and the ``hub.publish`` Celery
task call :func:`publish`; the API calls :func:`publish_together`, the same
path with concurrent publishes grouped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hub import metrics, recipients
from hub.addresses import email_address
from hub.errors import BrokerUnavailable, ConfigError, EventError
from hub.recipients import RecipientError
from hub.settings import EventType, get_settings
from hub.store import events as stored_events
from hub.store.db import session
from hub.store.models import Event
from hub.store.recipients import RecipientChange, upsert_recipients
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
                event_type.data_schema, format_checker=_FORMATS
            )
            with suppress(fastjsonschema.JsonSchemaDefinitionException):
                self._fast[name] = fastjsonschema.compile(
                    event_type.data_schema, formats={"email": is_email}
                )

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


def is_email(value: Any) -> bool:
    """Whether ``value`` is one email address (``format: email``); other types pass.

    jsonschema's own check only looks for an ``@``, which let a recipient
    carrying CR/LF and extra headers through.
    """
    if not isinstance(value, str):
        return True
    try:
        email_address(value)
    except ValueError:
        return False
    return True


# jsonschema's formats with email replaced; its own FORMAT_CHECKER stays untouched.
_FORMATS = FormatChecker(formats=list(FormatChecker.checkers))
_FORMATS.checks("email")(is_email)


@cache
def catalog() -> Catalog:
    """The process's catalog, built from settings on first use."""
    return Catalog(get_settings().events)


def new_event_id() -> str:
    """A time-ordered unique id: 12 hex digits of milliseconds, 16 random."""
    return f"evt_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a publish says besides the event: whom it names, when, and its cancellation key.

    As received: recipient ids or inline recipients, topic keys, the time not
    to deliver before (aware), and the key ``POST /v1/cancel`` takes.
    """

    recipients: Sequence[Any] = ()
    topics: Sequence[Any] = ()
    deliver_at: datetime | None = None
    cancellation_key: str | None = None


PLAIN = Envelope()
# Recipients or topics one event may name; a topic stands for any number of members.
MAX_NAMED = 1000


def publish(
    event_type: str,
    data: Any,
    idempotency_key: str | None = None,
    *,
    keep_if_broker_down: bool = False,
    to: Envelope = PLAIN,
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
    event, inline = _validated(event_type, data, idempotency_key, to)
    _upsert(inline)
    [answer] = _store_and_enqueue([event], keep_if_broker_down=keep_if_broker_down)
    if isinstance(answer, EventError):
        raise answer
    return answer


async def publish_together(
    event_type: str, data: Any, idempotency_key: str | None = None, to: Envelope = PLAIN
) -> Accepted:
    """:func:`publish` for many concurrent callers on one event loop (the API).

    Publishes that arrive while an earlier group is being stored share one
    transaction and one broker message (see :class:`_Coalescer`); each caller
    still returns only once its own event is stored and enqueued.
    """
    event, inline = _validated(event_type, data, idempotency_key, to)
    if inline:
        await asyncio.to_thread(_upsert, inline)
    return await _coalescer().submit(event)


def _upsert(inline: Sequence[RecipientChange]) -> None:
    """Store the inline recipients of events about to be stored (a merge, safe to repeat)."""
    if inline:
        with session(get_settings().resolved_database_url) as db:
            upsert_recipients(db, inline)


def _validated(
    event_type: str, data: Any, idempotency_key: str | None, to: Envelope = PLAIN
) -> tuple[Event, list[RecipientChange]]:
    """The event to store, or :class:`EventError` naming each field that is wrong."""
    try:
        return _checked(event_type, data, idempotency_key, to)
    except EventError:
        # An unknown type is counted as one label: a caller must not grow the series.
        known = event_type if event_type in get_settings().events else "unknown"
        metrics.event(known, "rejected")
        raise


def _checked(
    event_type: str, data: Any, idempotency_key: str | None, to: Envelope = PLAIN
) -> tuple[Event, list[RecipientChange]]:
    """:func:`_validated`'s checks.

    What no store or worker can take is refused before the schema is checked
    (the schema's messages quote values): NUL, lone surrogates, data nested
    deeper than ``api.max_depth`` or strings over ``api.max_string_bytes``.
    """
    limits = get_settings().api
    errors = _text_errors(["type"], event_type)
    if idempotency_key is not None:
        errors += _text_errors(["id"], idempotency_key, control=True)
    errors += _data_errors(data, limits.max_depth, limits.max_string_bytes)
    ids, inline, addressing_errors = _addressing(to)
    errors += addressing_errors
    if to.cancellation_key is not None:
        errors += _text_errors(["cancellation_key"], to.cancellation_key, control=True)
    if to.deliver_at is not None and to.deliver_at.tzinfo is None:
        message = "needs a UTC offset or Z, e.g. 2026-12-24T09:00:00+01:00"
        errors.append(_error(["deliver_at"], message, "timezone_aware"))
    if errors:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in errors)
        raise EventError(f"invalid event: {fields}", errors)
    catalog().validate(event_type, data)
    event = Event(
        id=new_event_id(),
        type=event_type,
        data=data,
        idempotency_key=idempotency_key,
        recipients=ids or None,
        topics=list(dict.fromkeys(to.topics)) or None,
        deliver_at=to.deliver_at,
        cancellation_key=to.cancellation_key,
    )
    return event, inline


def _addressing(to: Envelope) -> tuple[list[str], list[RecipientChange], list[dict[str, Any]]]:
    """The recipient ids an event names, its inline recipients to store, and what is wrong."""
    errors: list[dict[str, Any]] = []
    for field, named in (("recipients", to.recipients), ("topics", to.topics)):
        if len(named) > MAX_NAMED:
            errors.append(_error([field], f"more than {MAX_NAMED} entries", "limit_exceeded"))
    ids: list[str] = []
    inline: list[RecipientChange] = []
    for index, entry in enumerate(to.recipients):
        loc: list[str | int] = ["recipients", index]
        if isinstance(entry, str):
            errors += [{**e, "loc": [*loc, *e["loc"]]} for e in recipients.key_errors(entry)]
            ids.append(entry)
            continue
        try:
            change = recipients.parse(entry)
        except RecipientError as exc:
            errors += [{**e, "loc": [*loc, *e["loc"]]} for e in exc.errors]
            continue
        inline.append(change)
        ids.append(change.id)
    for index, topic in enumerate(to.topics):
        problems = recipients.topic_errors(topic) if isinstance(topic, str) else None
        if problems is None:
            problems = [_error([], "expected a string", "string_type")]
        errors += [{**e, "loc": ["topics", index, *e["loc"]]} for e in problems]
    return list(dict.fromkeys(ids)), inline, errors


def _text_errors(loc: list[str | int], text: str, control: bool = False) -> list[dict[str, Any]]:
    """Why ``text`` cannot be stored as it is: NUL, lone surrogates, control characters."""
    if "\x00" in text:
        return [_error(loc, "contains a NUL character (\\u0000)", "invalid_character")]
    try:
        text.encode()
    except UnicodeEncodeError:
        return [_error(loc, "contains a lone surrogate (not valid Unicode)", "invalid_character")]
    if control and any(ord(char) < 32 or ord(char) == 127 for char in text):
        return [_error(loc, "contains a control character", "invalid_character")]
    return []


def _data_errors(data: Any, max_depth: int, max_string_bytes: int) -> list[dict[str, Any]]:
    """The first problem with ``data`` that no store or worker could take (no recursion)."""
    pending: list[tuple[Any, list[str | int]]] = [(data, ["data"])]
    while pending:
        value, loc = pending.pop()
        if isinstance(value, str):
            if errors := _text_errors(loc, value):
                return errors
            if len(value) * 4 > max_string_bytes and len(value.encode()) > max_string_bytes:
                message = f"longer than {max_string_bytes} bytes (api.max_string_bytes)"
                return [_error(loc, message, "limit_exceeded")]
            continue
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        # The data object itself is level 1.
        if len(loc) > max_depth:
            message = f"nested deeper than {max_depth} levels of objects and arrays (api.max_depth)"
            return [_error(["data"], message, "limit_exceeded")]
        for key, child in children:
            if isinstance(key, str) and (errors := _text_errors([*loc, key], key)):
                return errors
            pending.append((child, [*loc, key]))
    return []


def _error(loc: list[str | int], message: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": kind}


def _store_and_enqueue(
    events: list[Event], keep_if_broker_down: bool = False
) -> list[Accepted | EventError]:
    """Store events in one transaction and route them with few broker messages.

    Each event is answered: accepted, a duplicate of the first event with its
    idempotency key, or an ``idempotency_conflict`` when that first event
    said something else. If the broker refuses, the new events are removed
    again (unless a worker already began routing them, or
    ``keep_if_broker_down``: the sweeper then enqueues them later) and
    :class:`BrokerUnavailable` raised.
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
            _count(events, ["refused"] * len(events))
            raise
    answers = [
        _answer(event, first, new) for event, (first, new) in zip(events, stored, strict=True)
    ]
    _count(events, [_outcome(answer) for answer in answers])
    return answers


def _outcome(answer: Accepted | EventError) -> str:
    if isinstance(answer, EventError):
        return "conflict"
    return "duplicate" if answer.duplicate else "accepted"


def _count(events: Sequence[Event], outcomes: Sequence[str]) -> None:
    """hub_events_total for a group of events, one increment per type and outcome."""
    if not metrics.enabled():
        return
    counts: dict[tuple[str, str], int] = {}
    for event, outcome in zip(events, outcomes, strict=True):
        counts[event.type, outcome] = counts.get((event.type, outcome), 0) + 1
    for (event_type, outcome), count in counts.items():
        metrics.event(event_type, outcome, count)


def _answer(event: Event, first: Event, new: bool) -> Accepted | EventError:
    """A new event, a true duplicate of ``first``, or a conflict with it."""
    if new:
        return Accepted(first.id)
    if _payload(first) == _payload(event):
        return Accepted(first.id, duplicate=True)
    return _conflict(event, first)


def _payload(event: Event) -> str:
    """What an idempotency key stands for: type, data, addressing and timing, canonically."""
    deliver_at = event.deliver_at.astimezone(UTC).isoformat() if event.deliver_at else None
    named = [
        event.type,
        event.data,
        event.recipients or [],
        event.topics or [],
        deliver_at,
        event.cancellation_key,
    ]
    return json.dumps(named, sort_keys=True, separators=(",", ":"))


def _conflict(event: Event, first: Event) -> EventError:
    message = (
        f"id {event.idempotency_key!r} was already used by event {first.id} with a different "
        "type or data; send a new id for a new event"
    )
    return EventError(message, [_error(["id"], message, "idempotency_conflict")])


def _store_alone(events: list[Event]) -> list[Accepted | EventError | Exception]:
    """Store each event in its own transaction: one the database refuses fails alone."""
    answers: list[Accepted | EventError | Exception] = []
    for event in events:
        try:
            answers += _store_and_enqueue([event])
        except SQLAlchemyError as exc:
            answers.append(exc)
    return answers


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
        events = [event for event, _ in group]
        answers: Sequence[Accepted | Exception]
        try:
            answers = await asyncio.to_thread(_store_and_enqueue, events)
        except SQLAlchemyError as exc:
            # One event the database refuses must not fail the others' requests.
            answers = await asyncio.to_thread(_store_alone, events) if len(group) > 1 else [exc]
        except Exception as exc:
            answers = [exc] * len(group)
        for (_, future), answer in zip(group, answers, strict=True):
            if future.done():  # its caller may have gone (client disconnected)
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)


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
    to: Envelope = PLAIN


def publish_many(incoming: Sequence[Incoming]) -> list[Accepted | EventError]:
    """Validate, store and enqueue a batch: one transaction, one broker message per chunk.

    Each item gets its own answer: accepted, a duplicate of an earlier event,
    or the :class:`EventError` that rejected it. Like :func:`publish`, if the
    broker cannot take the batch nothing of it is kept and
    :class:`BrokerUnavailable` is raised.
    """
    rejected: dict[int, EventError] = {}
    valid: list[Event] = []
    inline: list[RecipientChange] = []
    for index, item in enumerate(incoming):
        try:
            event, named = _validated(item.type, item.data, item.idempotency_key, item.to)
        except EventError as exc:
            rejected[index] = exc
            continue
        valid.append(event)
        inline += named
    _upsert(inline)
    stored = iter(_store_valid(valid) if valid else [])
    return [rejected[i] if i in rejected else next(stored) for i in range(len(incoming))]


def _store_valid(events: list[Event]) -> list[Accepted | EventError]:
    """:func:`_store_and_enqueue`, falling back to one transaction per event on a database error.

    Only when the database refuses every event alone is its error raised
    (it is down, not refusing one event).
    """
    try:
        return _store_and_enqueue(events)
    except SQLAlchemyError:
        if len(events) == 1:
            raise
    answers = _store_alone(events)
    refused = [answer for answer in answers if isinstance(answer, SQLAlchemyError)]
    if len(refused) == len(answers):
        raise refused[0]
    return [_refused(answer) if isinstance(answer, Exception) else answer for answer in answers]


def _refused(exc: Exception) -> EventError:
    if isinstance(exc, EventError):
        return exc
    # The driver's message only: the statement and its parameters hold event data.
    cause = getattr(exc, "orig", None) or exc
    message = f"the database refused this event: {type(cause).__name__}"
    return EventError(message, [_error([], message, "store_error")])
