"""Dead letters: find notifications that failed, or whose outcome is unknown, and resend them."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hub.errors import BrokerUnavailable, InvalidFilter
from hub.settings import Settings
from hub.store import repository
from hub.store.db import session
from hub.store.models import Notification

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str | None) -> datetime | None:
    """``"1h"``, ``"30m"``, ``"2d"`` ago, or an ISO 8601 timestamp."""
    if not value:
        return None
    if match := _DURATION.match(value.strip()):
        delta = timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
        return datetime.now(UTC) - delta
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFilter(f"since: {value!r} is neither a duration (1h) nor ISO 8601") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        return repository.find_notifications(
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
    from hub.worker import enqueue_deliveries  # the Celery app needs a broker URL

    with session(settings.resolved_database_url) as db:
        if not ids:
            found = repository.find_notifications(
                db, statuses=statuses, channel=channel, since=since, limit=limit
            )
            ids = [n.id for n in found]
        requeued = repository.requeue(db, ids) if ids else []
    try:
        enqueue_deliveries(requeued)
    except BrokerUnavailable as exc:
        # They are queued in the store, so the sweeper enqueues them later.
        log.warning("requeued in the store, broker unavailable: %s", exc)
    return [notification_id for notification_id, _ in requeued]
