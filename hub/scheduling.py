"""When a notification may go out: a subscription's delay, the event's ``deliver_at``, quiet hours.

Pure logic over times; no store, no broker. A notification that must wait is
stored ``scheduled`` with ``not_before`` and a reason; beat releases it when
its time comes (:func:`hub.store.schedule.release_due`), and a short wait is
also sent to the broker as a countdown, to be on time to the second. Quiet
hours are the recipient's own (``preferences.quiet_hours`` in their
``timezone``, UTC without one) and hold everything but ``critical``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.queues import CRITICAL


@dataclass(frozen=True, slots=True)
class Hold:
    """Until when a notification waits, and why (a reason code, then a sentence)."""

    until: datetime
    reason: str


def hold(
    now: datetime,
    *,
    delay_s: float = 0.0,
    deliver_at: datetime | None = None,
    priority: str = "normal",
    preferences: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> Hold | None:
    """How long a notification routed at ``now`` must wait, or None to send it at once.

    It waits for the later of ``deliver_at`` and ``now + delay_s``; a moment
    that falls in the recipient's quiet hours moves to their end, unless the
    notification is ``critical``.
    """
    until, reason = now, ""
    if deliver_at is not None and deliver_at > until:
        until, reason = deliver_at, f"deliver_at: held until {_moment(deliver_at)}"
    if delay_s and now + timedelta(seconds=delay_s) > until:
        until = now + timedelta(seconds=delay_s)
        reason = f"delayed: held {delay_s:g}s by its subscription"
    quiet = (preferences or {}).get("quiet_hours")
    if quiet and priority != CRITICAL:
        end = quiet_hours_end(until, quiet["start"], quiet["end"], timezone)
        if end is not None:
            until = end
            reason = f"quiet_hours: the recipient's quiet hours end at {_moment(end)}"
    return Hold(until, reason) if until > now else None


def quiet_hours_end(
    at: datetime, start: str, end: str, timezone: str | None = None
) -> datetime | None:
    """When the quiet hours around ``at`` end, or None if ``at`` is outside them.

    ``start`` and ``end`` are clock times (``"22:00"``, ``"07:00:30"``) in
    ``timezone``; an ``end`` before ``start`` spans midnight.
    """
    zone = ZoneInfo(timezone) if timezone else UTC
    local = at.astimezone(zone)
    begins, ends = _clock(start), _clock(end)
    now = local.time().replace(tzinfo=None)
    if begins < ends:
        inside, day = begins <= now < ends, local.date()
    else:
        inside = now >= begins or now < ends
        day = local.date() + timedelta(days=1) if now >= begins else local.date()
    if not inside:
        return None
    return datetime.combine(day, ends, tzinfo=zone).astimezone(UTC)


def _clock(text: str) -> time:
    return time.fromisoformat(text)


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
