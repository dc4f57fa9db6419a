"""Recipients and topics: checking what callers send, then keeping it.

The API, ``hub recipients import`` and a publish's inline recipients all go
through :func:`parse`, so a recipient is checked and normalised the same way
wherever it comes from: ``email`` by :func:`hub.addresses.email_address`,
``phone`` to E.164 in ``channels.sms.default_region``, ``slack`` as a member
or channel id (never a URL), ``timezone`` as an IANA name, ``locale`` as
``fr`` or ``fr-CA``, and ``preferences`` to a strict shape.

A change is a JSON Merge Patch (RFC 7396) of the stored recipient: absent
fields are kept, ``null`` clears one, and ``data`` and ``preferences`` merge
key by key (``{"data": {"plan": null}}`` removes ``plan`` alone).

Errors come as :class:`RecipientError`, whose ``errors`` have FastAPI's shape
(``loc``, ``msg``, ``type``) with ``loc`` relative to the recipient, so the
API can prefix ``body`` and the CLI print ``FILE:LINE: field: message``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.addresses import email_address
from hub.errors import InputError, PermanentError
from hub.settings import get_settings
from hub.store import recipients as stored
from hub.store.db import session
from hub.store.recipients import FIELDS, Member, RecipientChange, RecipientRow

# Recipients per batch request, ids per topic request, rows per import transaction.
MAX_BATCH = 1000
# Longest id, topic key, category or channel name (the columns hold 200).
MAX_KEY = 200

Error = dict[str, Any]

# Slack ids: U/W members, C public and G private channels, D direct messages.
_SLACK_ID = re.compile(r"[CDGUW][A-Z0-9]{8,20}")
# A language, an optional script and an optional region: fr, fr-CA, zh-Hant-TW, es-419.
_LOCALE = re.compile(r"([a-z]{2,3})(?:-([a-z]{4}))?(?:-([a-z]{2}|[0-9]{3}))?")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?")


class RecipientError(InputError):
    """A recipient or topic request is invalid; ``errors`` name each field that is wrong."""

    def __init__(self, errors: list[Error]) -> None:
        fields = ", ".join(".".join(map(str, e["loc"])) or "recipient" for e in errors)
        super().__init__(f"invalid {fields}")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``hub recipients import`` did: how many were stored, and each bad line."""

    imported: int
    # (line, "field: message"), in file order.
    errors: list[tuple[int, str]]


def parse(fields: Any, recipient_id: str | None = None) -> RecipientChange:
    """The change ``fields`` asks of a recipient, checked and normalised.

    ``recipient_id`` comes from the URL; without it ``fields`` must hold ``id``
    (a batch item, an import line). Raises :class:`RecipientError` listing
    every field that is wrong.
    """
    if not isinstance(fields, Mapping):
        raise RecipientError([_error([], "expected a JSON object", "dict_type")])
    body = dict(fields)
    given_id = body.pop("id", None)
    errors: list[Error] = []
    if recipient_id is not None and given_id not in (None, recipient_id):
        errors.append(_error(["id"], "differs from the id in the URL", "value_error"))
    recipient_id = recipient_id if recipient_id is not None else given_id
    if recipient_id is None:
        errors.append(_error(["id"], "a recipient needs an id", "missing"))
    else:
        errors += _at(["id"], key_errors(recipient_id))
    patch: dict[str, Any] = {}
    for name, value in body.items():
        check = _CHECKS.get(name)
        if check is None:
            known = ", ".join(FIELDS)
            errors.append(_error([name], f"unknown field; known: id, {known}", "extra_forbidden"))
        elif value is None:
            patch[name] = None
        else:
            try:
                patch[name] = check(value)
            except RecipientError as exc:
                errors += _at([name], exc.errors)
    if errors:
        raise RecipientError(errors)
    return RecipientChange(str(recipient_id), patch)


def key_errors(value: Any) -> list[Error]:
    """Why ``value`` cannot be a recipient id (or a name): 1–200 characters of clean text."""
    if not isinstance(value, str):
        return [_error([], "expected a string", "string_type")]
    if not value:
        return [_error([], "cannot be empty", "string_too_short")]
    if len(value) > MAX_KEY:
        return [_error([], f"at most {MAX_KEY} characters", "string_too_long")]
    return _text_errors(value)


def topic_errors(topic: str) -> list[Error]:
    """Why ``topic`` cannot be a topic key: as an id, and no ``/`` (it is one URL segment)."""
    if errors := key_errors(topic):
        return errors
    if "/" in topic:
        return [_error([], "cannot hold '/'", "invalid_character")]
    return []


def upsert(changes: Sequence[RecipientChange]) -> list[tuple[RecipientRow, bool]]:
    """Apply ``changes`` in one transaction; the stored recipient and whether it is new, each."""
    with session(get_settings().resolved_database_url) as db:
        return stored.upsert_recipients(db, changes)


def get(recipient_id: str) -> RecipientRow | None:
    """The stored recipient, or None."""
    with session(get_settings().resolved_database_url) as db:
        return stored.get_recipient(db, recipient_id)


def delete(recipient_id: str) -> bool:
    """Delete a recipient and its topic memberships; False if there was none."""
    with session(get_settings().resolved_database_url) as db:
        return stored.delete_recipient(db, recipient_id)


def add_to_topic(topic: str, recipient_ids: Sequence[Any]) -> int:
    """Add recipients to ``topic`` (a union); how many joined.

    All or nothing: a malformed topic key (``loc`` ``["topic"]``), more than
    1,000 ids, or an id that is malformed or names no recipient (``loc``
    ``["recipients", i]``) fails the request with a :class:`RecipientError`.
    """
    errors = _at(["topic"], topic_errors(topic))
    if len(recipient_ids) > MAX_BATCH:
        message = f"more than {MAX_BATCH} recipients in one request"
        errors.append(_error(["recipients"], message, "limit_exceeded"))
    for index, recipient_id in enumerate(recipient_ids):
        errors += _at(["recipients", index], key_errors(recipient_id))
    if errors:
        raise RecipientError(errors)
    with session(get_settings().resolved_database_url) as db:
        if unknown := stored.unknown_recipients(db, recipient_ids):
            raise RecipientError(
                [
                    _error(["recipients", index], f"no recipient {id!r}", "unknown_recipient")
                    for index, id in enumerate(recipient_ids)
                    if id in unknown
                ]
            )
        return stored.add_members(db, topic, recipient_ids)


def remove_from_topic(topic: str, recipient_id: str) -> bool:
    """Take a recipient out of ``topic``; False if it was not a member."""
    with session(get_settings().resolved_database_url) as db:
        return stored.remove_member(db, topic, recipient_id)


def topic_page(
    topic: str, after: tuple[datetime, str] | None, limit: int
) -> tuple[list[Member], tuple[datetime, str] | None]:
    """A page of ``topic``'s members, oldest first, and where the next starts (None: last page)."""
    with session(get_settings().resolved_database_url) as db:
        page = stored.members_by_age(db, topic, after, limit + 1)
    if len(page) <= limit:
        return page, None
    last = page[limit - 1]
    return page[:limit], (last.created_at, last.recipient_id)


def import_file(path: Path) -> ImportReport:
    """Upsert the recipients of a JSON Lines (``.jsonl``) or CSV file (with a header row).

    Valid lines are stored, 1,000 per transaction; each bad line is reported
    with its number and stored not at all. In a CSV an empty cell leaves its
    field as it is, and ``data`` and ``preferences`` cells hold JSON objects.
    Raises :class:`OSError` or :class:`UnicodeDecodeError` for an unreadable file.
    """
    records = _jsonl(path) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv(path)
    imported = 0
    errors: list[tuple[int, str]] = []
    pending: list[RecipientChange] = []
    for line, record in records:
        try:
            pending.append(_parsed(record))
        except RecipientError as exc:
            errors += [(line, _said(error)) for error in exc.errors]
        if len(pending) == MAX_BATCH:
            imported += len(upsert(pending))
            pending = []
    if pending:
        imported += len(upsert(pending))
    return ImportReport(imported, errors)


def _parsed(record: Any) -> RecipientChange:
    """A file reader's record parsed; what the reader could not read is raised as it is."""
    if isinstance(record, RecipientError):
        raise record
    return parse(record)


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and JSON value (a :class:`RecipientError` if it is none)."""
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                message = f"invalid JSON at column {exc.colno}: {exc.msg}"
                yield number, RecipientError([_error([], message, "json_invalid")])


def _csv(path: Path) -> Iterator[tuple[int, Any]]:
    """Each row's first line number and fields (a :class:`RecipientError` if unreadable)."""
    with path.open(encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        if unknown := [name for name in header if name != "id" and name not in FIELDS]:
            known = ", ".join(("id", *FIELDS))
            message = f"unknown column(s) {', '.join(map(repr, unknown))}; known: {known}"
            yield 1, RecipientError([_error([], message, "extra_forbidden")])
            return
        start = reader.line_num + 1
        for cells in reader:
            yield start, _csv_record(header, cells)
            start = reader.line_num + 1


def _csv_record(header: list[str], cells: list[str]) -> dict[str, Any] | RecipientError:
    """A CSV row as fields: empty cells left out, JSON read from ``data``/``preferences``."""
    if len(cells) != len(header):
        message = f"{len(cells)} cells for {len(header)} columns"
        return RecipientError([_error([], message, "csv_invalid")])
    record: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        if cell == "":
            continue
        if name in ("data", "preferences"):
            try:
                record[name] = json.loads(cell)
            except json.JSONDecodeError as exc:
                message = f"invalid JSON at column {exc.colno}: {exc.msg}"
                return RecipientError([_error([name], message, "json_invalid")])
        else:
            record[name] = cell
    return record


def _said(error: Error) -> str:
    where = ".".join(map(str, error["loc"]))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _email(value: Any) -> str:
    return email_address(_string(value, 500)).address


def _phone(value: Any) -> str:
    from hub.channels.sms import to_e164

    try:
        return to_e164(_string(value, 50), get_settings().channels.sms.default_region)
    except PermanentError as exc:
        raise ValueError(str(exc)) from None


def _slack(value: Any) -> str:
    text = _string(value, 100)
    if not _SLACK_ID.fullmatch(text):
        raise ValueError(
            f"{text[:80]!r} is not a Slack member or channel id like U024BE7LH or "
            "C1234567890 (not a URL or a #name)"
        )
    return text


def _locale(value: Any) -> str:
    """``fr``, ``fr-CA`` or ``zh-Hant-TW`` in these cases, however it came (``_`` read as ``-``)."""
    text = _string(value, 35)
    found = _LOCALE.fullmatch(text.replace("_", "-").lower())
    if found is None:
        raise ValueError(f"{text[:80]!r} is not a locale like fr or fr-CA")
    language, script, region = found.groups()
    return "-".join(
        part for part in (language, script and script.title(), region and region.upper()) if part
    )


def _timezone(value: Any) -> str:
    text = _string(value, 64)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text[:80]!r} is not an IANA time zone like Europe/Paris") from None
    return text


def _data(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RecipientError([_error([], "expected a JSON object", "dict_type")])
    limits = get_settings().api
    if errors := _data_errors(value, limits.max_depth, limits.max_string_bytes):
        raise RecipientError(errors)
    return dict(value)


def _preferences(value: Any) -> dict[str, Any]:
    """``{"channels": {name: bool}, "categories": {name: bool}, "quiet_hours": {start, end}}``.

    ``None`` anywhere clears that part (a merge patch); nothing else is accepted.
    """
    errors: list[Error] = []
    shapes = {
        "channels": lambda v: _switches(v, set(get_settings().channel_classes)),
        "categories": lambda v: _switches(v, None),
        "quiet_hours": _quiet_hours,
    }
    if not isinstance(value, Mapping):
        raise RecipientError([_error([], "expected a JSON object", "dict_type")])
    for name, part in value.items():
        shape = shapes.get(name)
        if shape is None:
            message = "unknown preference; known: channels, categories, quiet_hours"
            errors.append(_error([name], message, "extra_forbidden"))
        elif part is not None:
            errors += _at([name], shape(part))
    if errors:
        raise RecipientError(errors)
    return dict(value)


def _switches(value: Any, known: set[str] | None) -> list[Error]:
    """Why ``value`` is not ``{name: true|false|null}``; ``known`` limits the names."""
    if not isinstance(value, Mapping):
        return [_error([], "expected an object of name: true or false", "dict_type")]
    errors: list[Error] = []
    for name, on in value.items():
        if problems := key_errors(name):
            errors += _at([name], problems)
        elif known is not None and name not in known:
            message = f"unknown channel; known: {', '.join(sorted(known))}"
            errors.append(_error([name], message, "unknown_channel"))
        elif on is not None and not isinstance(on, bool):
            errors.append(_error([name], "expected true, false or null", "bool_type"))
    return errors


def _quiet_hours(value: Any) -> list[Error]:
    """Why ``value`` is not ``{"start": "HH:MM[:SS]", "end": "HH:MM[:SS]"}`` (recipient's zone)."""
    if not isinstance(value, Mapping):
        return [_error([], 'expected {"start": "22:00", "end": "07:00"}', "dict_type")]
    errors = [
        _error([name], "unknown field; known: start, end", "extra_forbidden")
        for name in value
        if name not in ("start", "end")
    ]
    for name in ("start", "end"):
        clock = value.get(name)
        if clock is None:
            errors.append(_error([name], "a time like 22:00 is required", "missing"))
        elif not isinstance(clock, str) or not _CLOCK.fullmatch(clock):
            errors.append(_error([name], "expected a 24-hour time like 07:00", "value_error"))
    if not errors and value["start"] == value["end"]:
        errors.append(_error([], "start and end are the same time", "value_error"))
    return errors


def _string(value: Any, longest: int) -> str:
    """``value`` as clean text of at most ``longest`` characters, or why not."""
    if not isinstance(value, str):
        raise RecipientError([_error([], "expected a string or null", "string_type")])
    if len(value) > longest:
        message = f"at most {longest} characters"
        raise RecipientError([_error([], message, "string_too_long")])
    if errors := _text_errors(value):
        raise RecipientError(errors)
    return value


def _text_errors(text: str) -> list[Error]:
    """Why ``text`` cannot be an id, key or address: NUL, lone surrogates, control characters."""
    if problem := _unstorable(text):
        return [problem]
    if any(unicodedata.category(char) == "Cc" for char in text):
        return [_error([], "contains a control character", "invalid_character")]
    return []


def _data_errors(data: Mapping[str, Any], max_depth: int, max_string_bytes: int) -> list[Error]:
    """The first problem with ``data`` no store could take: NUL, surrogates, depth, size."""
    pending: list[tuple[Any, list[str | int]]] = [(data, [])]
    while pending:
        value, loc = pending.pop()
        if isinstance(value, str):
            if problem := _storable(value, max_string_bytes):
                return _at(loc, [problem])
            continue
        if isinstance(value, float) and not math.isfinite(value):
            # Python's JSON reads NaN and Infinity; PostgreSQL's JSON refuses them.
            return [_error(loc, "not a finite number", "finite_number")]
        if isinstance(value, Mapping):
            children: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        # The data object itself is level 1.
        if len(loc) >= max_depth:
            message = f"nested deeper than {max_depth} levels (api.max_depth)"
            return [_error([], message, "limit_exceeded")]
        for key, child in children:
            if isinstance(key, str) and (problem := _storable(key, max_string_bytes)):
                return _at([*loc, key], [problem])
            pending.append((child, [*loc, key]))
    return []


def _storable(text: str, max_string_bytes: int) -> Error | None:
    """Why a string of ``data`` cannot be stored: as :func:`_unstorable`, or too long."""
    if problem := _unstorable(text):
        return problem
    if len(text) * 4 > max_string_bytes and len(text.encode()) > max_string_bytes:
        message = f"longer than {max_string_bytes} bytes (api.max_string_bytes)"
        return _error([], message, "limit_exceeded")
    return None


def _unstorable(text: str) -> Error | None:
    """Why no store takes ``text``: a NUL or a lone surrogate (PostgreSQL refuses both)."""
    if "\x00" in text:
        return _error([], "contains a NUL character (\\u0000)", "invalid_character")
    try:
        text.encode()
    except UnicodeEncodeError:
        return _error([], "contains a lone surrogate (not valid Unicode)", "invalid_character")
    return None


def _error(loc: list[str | int], message: str, kind: str) -> Error:
    return {"type": kind, "loc": loc, "msg": message}


def _at(prefix: list[str | int], errors: list[Error]) -> list[Error]:
    """``errors`` located under ``prefix``."""
    return [{**error, "loc": [*prefix, *error["loc"]]} for error in errors]


def _value(check: Any) -> Any:
    """``check`` with its ``ValueError`` sentence as this field's ``value_error``."""

    def checked(value: Any) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise RecipientError([_error([], str(exc), "value_error")]) from None

    return checked


_CHECKS = {
    "email": _value(_email),
    "phone": _value(_phone),
    "slack": _value(_slack),
    "locale": _value(_locale),
    "timezone": _value(_timezone),
    "data": _data,
    "preferences": _preferences,
}
