"""What the hub is doing now: ``GET /v1/stats?window=1h``.

Counts are of notifications whose status last changed within the window
(so a notification sent an hour after it was queued counts when it was
sent), per channel and status; failure rates are ``failed / (sent +
delivered + failed)`` of those. Queue depths are asked of the broker at the
request; the oldest queued age is how long the notification waiting longest
in ``queued`` has waited.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from hub import queues
from hub.api.auth import Access
from hub.embedded import running_url
from hub.queue_depths import DepthUnavailable, queue_depths
from hub.settings import Settings, parse_duration
from hub.store import activity
from hub.store.db import session

# Slices of the window in ``series``: enough for a small chart, one GROUP BY.
BUCKETS = 24
# The longest window: counts read every row of it.
MAX_WINDOW_S = 31 * 86400


class ChannelStats(BaseModel):
    total: int
    by_status: dict[str, int]
    failure_rate: float | None = Field(
        description="failed / (sent + delivered + failed); None when none finished"
    )
    sent_per_minute: float = Field(description="sent or delivered, per minute of the window")
    series: list[list[int]] = Field(
        description="The window in equal slices, oldest first: [sent or delivered, failed]"
    )


class StatsOut(BaseModel):
    window: str
    window_s: float
    start: datetime
    end: datetime
    bucket_s: float = Field(description="The length of one slice of each channel's series")
    total: int
    by_status: dict[str, int]
    by_channel: dict[str, ChannelStats]
    failure_rates: dict[str, float | None]
    queues: dict[str, int] | None = Field(
        description="Messages waiting in each broker queue now; None when it cannot be asked"
    )
    queues_error: str | None = None
    oldest_queued_age_s: float | None = Field(
        description="How long the notification longest in `queued` has waited; None: none"
    )


def add_stats_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    url = settings.resolved_database_url
    queue_names = queues.all_queues(settings.channel_classes)

    @app.get("/v1/stats", dependencies=[Depends(access.read)])
    def stats(
        window: Annotated[str, Query(description="A duration: 15m, 1h, 24h")] = "1h",
    ) -> StatsOut:
        """Counts per status and channel in the window, failure rates, queue depths now."""
        window_s = _window(window)
        end = datetime.now(UTC)
        start = end - timedelta(seconds=window_s)
        with session(url) as db:
            counts = activity.window_counts(db, start, end, BUCKETS)
            oldest = activity.oldest_queued(db)
        depths, depth_error = _depths(settings, queue_names)
        by_status: dict[str, int] = {}
        by_channel: dict[str, ChannelStats] = {}
        for channel, statuses in sorted(counts.by_channel.items()):
            for status, count in statuses.items():
                by_status[status] = by_status.get(status, 0) + count
            by_channel[channel] = _channel(statuses, counts.series[channel], window_s)
        return StatsOut(
            window=window,
            window_s=window_s,
            start=start,
            end=end,
            bucket_s=window_s / BUCKETS,
            total=sum(by_status.values()),
            by_status=by_status,
            by_channel=by_channel,
            failure_rates={name: c.failure_rate for name, c in by_channel.items()},
            queues=depths,
            queues_error=depth_error,
            oldest_queued_age_s=None if oldest is None else max((end - oldest).total_seconds(), 0),
        )


def _window(value: str) -> float:
    """Seconds of ``window``; 422 naming it for anything but a positive duration up to 31d."""
    try:
        seconds = parse_duration(value, "window")
    except ValueError as exc:
        message = str(exc)
    else:
        if seconds <= MAX_WINDOW_S:
            return seconds
        message = f"window: {value!r} is longer than 31d"
    raise RequestValidationError(
        [{"type": "invalid_duration", "loc": ["query", "window"], "msg": message}]
    )


def _channel(statuses: dict[str, int], series: list[list[int]], window_s: float) -> ChannelStats:
    succeeded = sum(statuses.get(s, 0) for s in activity.SUCCEEDED)
    failed = statuses.get(activity.FAILED, 0)
    finished = succeeded + failed
    return ChannelStats(
        total=sum(statuses.values()),
        by_status=dict(sorted(statuses.items())),
        failure_rate=round(failed / finished, 4) if finished else None,
        sent_per_minute=round(succeeded / (window_s / 60), 3),
        series=series,
    )


def _depths(settings: Settings, names: tuple[str, ...]) -> tuple[dict[str, int] | None, str | None]:
    broker_url = settings.broker_url or running_url(settings.var_dir)
    if not broker_url:
        return None, "no broker_url and no embedded Redis running"
    try:
        return queue_depths(broker_url, names), None
    except DepthUnavailable as exc:
        return None, str(exc)
