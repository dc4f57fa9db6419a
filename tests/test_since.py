"""Spec: a `since` filter is a duration ago or an ISO 8601 time; anything else names `since`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.errors import InvalidFilter
from hub.notifications import parse_since


@pytest.mark.parametrize(
    ("value", "ago"),
    [("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)), ("2d", timedelta(days=2))],
)
def test_a_duration_means_that_long_ago(value: str, ago: timedelta) -> None:
    since = parse_since(value)

    assert since is not None
    assert abs(since - (datetime.now(UTC) - ago)) < timedelta(seconds=5)


def test_an_iso_time_is_taken_as_utc_when_it_has_no_offset() -> None:
    assert parse_since("2024-05-01T12:00:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since("2024-05-01T14:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_no_value_is_no_filter() -> None:
    assert parse_since(None) is None
    assert parse_since("") is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("yesterday-ish", "neither a duration"),
        ("3600", "neither a duration"),
        ("-1h", "neither a duration"),
        ("2y", "not a duration"),
        ("999999999d", "longer than 100 years"),
        ("9" * 5000 + "d", "longer than 100 years"),
    ],
)
def test_anything_else_is_an_invalid_filter_naming_since(value: str, problem: str) -> None:
    with pytest.raises(InvalidFilter, match=f"^since: .*{problem}"):
        parse_since(value)
