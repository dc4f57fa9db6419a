"""How many messages wait in each Celery queue on the broker, asked at the moment of the call.

Redis keeps a queue as a list, one per message priority step that kombu
uses (``email``, ``email\\x06\\x163``, ...): the depth is the sum of their
``LLEN``. RabbitMQ answers a passive ``queue_declare`` with the queue's
``message_count``. Neither counts tasks a worker holds (prefetched, or
waiting for a countdown): those are not waiting in the queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from kombu.connection import Connection

# kombu's Redis transport: a message of priority p > 0 goes to "<queue>\x06\x16<step>".
_REDIS_PRIORITY_SEP = "\x06\x16"
_REDIS_PRIORITY_STEPS = (3, 6, 9)
TIMEOUT_S = 3.0


class DepthUnavailable(Exception):
    """The broker could not be asked; the message says why."""


def queue_depths(broker_url: str, names: Sequence[str]) -> dict[str, int]:
    """``{queue: messages waiting}`` for ``names``; a queue the broker lacks counts 0."""
    try:
        if broker_url.startswith(("redis://", "rediss://", "unix://")):
            return _redis_depths(broker_url, names)
        return _amqp_depths(broker_url, names)
    except (OSError, redis.RedisError) as exc:
        raise DepthUnavailable(f"broker unavailable: {exc}") from exc


def _redis_depths(url: str, names: Sequence[str]) -> dict[str, int]:
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(name)
                for step in _REDIS_PRIORITY_STEPS:
                    pipe.llen(f"{name}{_REDIS_PRIORITY_SEP}{step}")
            lengths = pipe.execute()
    finally:
        client.close()
    per_queue = 1 + len(_REDIS_PRIORITY_STEPS)
    return {name: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(names)}


def _amqp_depths(url: str, names: Sequence[str]) -> dict[str, int]:
    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=TIMEOUT_S) as connection:  # type: ignore[no-untyped-call]
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except connection.channel_errors:
                # Not declared yet (no worker ever consumed it): nothing waits there.
                # The broker closed the channel with the 404; the next name needs a new one.
                depths[name] = 0
                channel = connection.channel()
        channel.close()
    return depths
