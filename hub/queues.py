"""Celery queue names, known without building the Celery app (the CLI needs them too).

``celery`` is Celery's default, so other apps' ``send_task("hub.publish")``
lands there with no queue argument; ``events`` takes routing and the
sweeper; each channel declares its queue (channels of one family share one),
so each can get its own workers and a slow provider never holds up another.

Each family has a queue per priority class: ``email.critical``,
``email.high``, ``email`` and ``email.low``. ``normal`` keeps the plain name,
so workers started with ``-Q email`` before priorities existed keep serving
the common case. They are plain queues, not the broker's message priorities:
Redis only emulates those, and a queue of its own is what lets critical work
get workers of its own (``hub worker -Q '*.critical'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.channels.base import Channel

DEFAULT = "celery"
EVENTS = "events"
# Status webhooks (hub.status_webhooks): a receiver that is down delays only them.
STATUS_WEBHOOKS = "status_webhooks"

# Most urgent first: the order a worker's queues are declared in, and the
# order routing picks the batch it sends itself.
PRIORITIES = ("critical", "high", "normal", "low")
NORMAL = "normal"
CRITICAL = "critical"

# What `hub up` runs a second, small worker on: routing and critical
# deliveries never wait behind a bulk backlog on the main worker.
CRITICAL_WORKER = f"{EVENTS},*.critical"


def queue_name(family: str, priority: str = NORMAL) -> str:
    """A channel family's queue for ``priority``: ``email.low``, or ``email`` for normal."""
    return family if priority == NORMAL else f"{family}.{priority}"


def all_queues(channels: Mapping[str, type[Channel[Any]]]) -> tuple[str, ...]:
    """Every queue the hub uses, the channels' own after the shared ones."""
    families = dict.fromkeys(channel.queue for channel in channels.values())
    return (
        DEFAULT,
        EVENTS,
        *(queue_name(family, priority) for family in families for priority in PRIORITIES),
        STATUS_WEBHOOKS,
    )


def expand(spec: str, known: Sequence[str]) -> list[str]:
    """The queues a ``-Q`` value names: comma-separated names or globs (``*.critical``).

    A glob stands for the known queues it matches and must match one; a plain
    name is kept as given (another app's queue is no error).
    """
    names: list[str] = []
    for part in filter(None, (item.strip() for item in spec.split(","))):
        if not any(char in part for char in "*?["):
            names.append(part)
            continue
        matched = [queue for queue in known if fnmatchcase(queue, part)]
        if not matched:
            raise ValueError(f"-Q {part!r} matches none of the hub's queues: {', '.join(known)}")
        names += matched
    return list(dict.fromkeys(names))
