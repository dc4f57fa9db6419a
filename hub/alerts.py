"""Failure alerts: grouping events by labels, silences, resolving, and what templates see.

A subscription with ``group_by`` turns matching events into alert groups
instead of one notification each: events with the same label values (say
``data.service``, ``data.task_name``, ``data.exception``) fold into one open
group, which notifies after ``group_wait`` with everything that arrived
meanwhile, then at most once per ``group_interval`` while news arrives, and
again after ``repeat_interval`` while unresolved (Alertmanager's model). An
event of the subscription's ``resolve_on`` type resolves the open groups whose
labels it shares (labels it lacks, such as the exception of a success, are
ignored), and sends one "resolved" notification. Escalation steps page more
people while a group stays unacknowledged. The store keeps each group's
state (:mod:`hub.store.alerts`); this module is pure logic over events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from hub.filters import MISSING, Filter, lookup, parse_filter, parse_path
from hub.settings import Subscription

# Alertmanager's defaults, where a grouped subscription leaves one unset.
GROUP_WAIT_S = 30.0
GROUP_INTERVAL_S = 300.0
REPEAT_INTERVAL_S = 4 * 3600.0
# Distinct messages a group keeps to show (the first ones seen).
MAX_MESSAGES = 5
MAX_MESSAGE_CHARS = 500


def labels(group_by: Sequence[str], event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's value at each ``group_by`` path (``None`` where it has none)."""
    found = {}
    for path in group_by:
        value = lookup(event, parse_path(path))
        found[path] = None if value is MISSING else value
    return found


def group_key(values: Mapping[str, Any]) -> str:
    """A fixed-size key for label values: one open group per subscription and key."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def group_id(subscription: str, key: str, first_event_id: str) -> str:
    """A group's id: the same for the same first event, so routing it twice makes one group."""
    digest = hashlib.sha256(f"{subscription}\x00{key}\x00{first_event_id}".encode()).hexdigest()
    return f"alr_{digest[:32]}"


def resolves(group_labels: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``event`` resolves a group with ``group_labels``.

    Every label the event has must be equal; labels it lacks are ignored (a
    success carries no exception), but it must share at least one.
    """
    shared = 0
    for path, value in group_labels.items():
        found = lookup(event, parse_path(path))
        if found is MISSING:
            continue
        if found != value:
            return False
        shared += 1
    return shared > 0


def silence_filter(matchers: Mapping[str, Any]) -> Filter:
    """The filter a silence's matchers stand for: a plain value means ``eq``."""
    return parse_filter(
        {
            path: value if isinstance(value, dict) else {"eq": value}
            for path, value in matchers.items()
        }
    )


def message_of(data: Mapping[str, Any]) -> str | None:
    """What an alert shows of one event: its ``message``, else its ``exception``."""
    text = data.get("message") or data.get("exception")
    return str(text)[:MAX_MESSAGE_CHARS] if text else None


def with_message(messages: Sequence[str], message: str | None) -> list[str]:
    """``messages`` with ``message`` added, if new and there is room."""
    if message is None or message in messages or len(messages) >= MAX_MESSAGES:
        return list(messages)
    return [*messages, message]


def timing(subscription: Subscription) -> tuple[float, float, float]:
    """``(group_wait, group_interval, repeat_interval)`` of a grouped subscription, in seconds."""
    return (
        subscription.seconds("group_wait", GROUP_WAIT_S),
        subscription.seconds("group_interval", GROUP_INTERVAL_S),
        subscription.seconds("repeat_interval", REPEAT_INTERVAL_S),
    )


def context(
    *,
    alert_id: str,
    status: str,
    count: int,
    first_seen: datetime,
    last_seen: datetime,
    messages: Sequence[str],
    group: Mapping[str, Any],
    ack_url: str | None,
) -> dict[str, Any]:
    """``alert`` as templates and webhook bodies see it."""
    return {
        "id": alert_id,
        "status": status,
        "count": count,
        "first_seen": first_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_seen": last_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "messages": list(messages),
        "group": dict(group),
        "ack_url": ack_url,
    }
