"""Durations and rates as settings and filters write them: ``"30s"``, ``"24h"``, ``"10/m"``.

The one parser of each, for settings, API filters and the rate limiter.
"""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass

from hub.errors import ConfigError

# Milliseconds in one of each unit of a duration ("30s") and of a rate's period ("10/m").
DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Longer than any delay, window or retention the hub has a use for: a longer
# one is a typo, and would overflow datetime arithmetic further on.
MAX_DURATION_S = 100 * 365 * 86_400
_DURATION = re.compile(r"^\s*([-+]?\d+)\s*(ms|s|m|h|d)\s*$")
_SECONDS = re.compile(r"^\s*[-+]?\d+(?:\.\d+)?\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: str | int | float, key: str, *, positive: bool = True) -> float:
    """Seconds in ``value``: ``"500ms"``, ``"30s"``, ``"5m"``, ``"24h"``, ``"2d"`` or seconds.

    Raises :class:`ValueError` naming ``key`` for anything else, for a negative
    duration, one longer than :data:`MAX_DURATION_S`, or zero when ``positive``.
    """
    seconds, shown = _seconds(value), reprlib.repr(value)
    if seconds is None:
        raise ValueError(f"{key}: {shown} is not a duration like '30s' or '24h'")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{key}: {shown} is longer than {MAX_DURATION_S // 31_536_000} years")
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{key}: {shown} must be {'above' if positive else 'at least'} zero")
    return float(seconds)


def _seconds(value: object) -> int | float | None:
    """``value`` in seconds, however large or negative; None when it is no duration."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if not isinstance(value, str):
        return None if isinstance(value, float) and math.isnan(value) else value
    if match := _DURATION.match(value):
        digits, unit = match.groups()
        if len(digits) > 30:  # past any cap; int() refuses thousands of digits
            return -math.inf if digits.startswith("-") else math.inf
        return int(digits) * DURATION_UNITS_MS[unit] / 1000
    return float(value) if _SECONDS.match(value) else None


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period_ms``, e.g. ``Rate.parse("10/s")``."""

    count: float
    period_ms: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``N/s``, ``N/m``, ``N/h``, ``N/d``, ``N/ms`` or ``N/10s``."""
        match = _RATE.match(text)
        try:
            if not match or not 0 < float(match.group(1)) < math.inf:
                raise ValueError(text)
            period_s = parse_duration(f"{match.group(2) or 1}{match.group(3)}", "rate")
        except ValueError:
            raise ConfigError(
                f"invalid rate {text!r}: expected e.g. '10/s', '50/m', '1/5s'"
            ) from None
        return cls(float(match.group(1)), period_s * 1000)

    @property
    def interval_ms(self) -> float:
        return self.period_ms / self.count
