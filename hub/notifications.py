"""Dead letters: find notifications that failed, or whose outcome is unknown, and resend them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hub.errors import BrokerUnavailable, InvalidFilter
from hub.settings import Settings, parse_duration
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import Notification
from hub.worker import enqueue_deliveries

log = logging.getLogger(__name__)


def parse_since(value: str | None) -> datetime | None:
    """``"1h"``, ``"30m"``, ``"2d"`` ago, or an ISO 8601 timestamp."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = value.strip()
    # A bare number stays refused: "20240101" is a date above, "2024010" a typo.
    if not (text[:1].isdigit() and text[-1:].isalpha()):
        raise InvalidFilter(f"since: {value!r} is neither a duration (1h) nor ISO 8601")
    try:
        seconds = parse_duration(text, "since", positive=False)
    except ValueError as exc:  # "1y", or too long ago for a date: names `since`
        raise InvalidFilter(str(exc)) from None
    return datetime.now(UTC) - timedelta(seconds=seconds)


def find(
    settings: Settings,
    *,
    statuses: Sequence[str] = (),
    channel: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> Sequence[Notification]:
    """Notifications matching the filters, newest first."""
    with session(settings.resolved_database_url) as db:
        return stored_notifications.find_notifications(
            db, statuses=statuses, channel=channel, since=since, limit=limit
        )


def retry(
    settings: Settings,
    *,
    ids: Sequence[str] = (),
    statuses: Sequence[str] = (),
    channel: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[str]:
    """Requeue the given notifications, or those matching the filters; their ids."""
    with session(settings.resolved_database_url) as db:
        if not ids:
            found = stored_notifications.find_notifications(
                db, statuses=statuses, channel=channel, since=since, limit=limit
            )
            ids = [n.id for n in found]
        requeued = stored_notifications.requeue(db, ids) if ids else []
    try:
        enqueue_deliveries(requeued)
    except BrokerUnavailable as exc:
        # They are queued in the store, so the sweeper enqueues them later.
        log.warning("requeued in the store, broker unavailable: %s", exc)
    return [notification_id for notification_id, _ in requeued]
