"""Celery queue names, known without building the Celery app (the CLI needs them too).

``celery`` is Celery's default, so other apps' ``send_task("hub.publish")``
lands there with no queue argument; ``events`` takes routing and the
sweeper; each channel declares its queue (channels of one family share one),
so each can get its own workers and a slow provider never holds up another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.channels.base import Channel

DEFAULT = "celery"
EVENTS = "events"


def all_queues(channels: Mapping[str, type[Channel[Any]]]) -> tuple[str, ...]:
    """Every queue the hub uses, the channels' own after the two shared ones."""
    return (DEFAULT, EVENTS, *dict.fromkeys(channel.queue for channel in channels.values()))
