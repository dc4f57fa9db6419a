"""Query parameters that name a span of time: ``since`` and ``until``, read alike on every list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

from fastapi.exceptions import RequestValidationError

from hub.errors import InvalidFilter
from hub.notifications import parse_since


def time_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` of a query, read; 422 naming the one that is not a time.

    A ``+`` in a query string reads as a space: an offset is best written ``Z``.
    """
    start = _moment("since", since, durations=True)
    end = _moment("until", until, durations=False)
    if start is not None and end is not None and end <= start:
        _invalid("until", "invalid_range", "until must be later than since")
    return start, end


def _moment(field: str, value: str | None, durations: bool) -> datetime | None:
    """ISO 8601 (UTC when it has no offset); for ``since`` also a duration ago (``1h``)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        if durations:
            try:
                return parse_since(value)
            except InvalidFilter:
                pass
        also = ", or a duration ago like 1h" if durations else ""
        _invalid(field, "invalid_time", f"not a time: ISO 8601 like 2026-01-31T12:00:00Z{also}")
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _invalid(field: str, kind: str, message: str) -> NoReturn:
    # As FastAPI's own 422, so the error names the query parameter.
    raise RequestValidationError([{"type": kind, "loc": ["query", field], "msg": message}])
