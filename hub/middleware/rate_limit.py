"""Rate limits shared by every worker, and the pause a provider asks for.

Tokens are taken after the claim and rendering, right before the sends: a
slow claim must not bunch sends together at the provider. Waiting is not an
attempt: the turns that must wait are released (claim and attempt undone)
and come back spread one interval apart, with a little jitter so workers do
not wake together. A provider's ``retry_after_s`` pauses the channel for
every worker.
"""

from __future__ import annotations

import random

from hub.errors import ChannelError
from hub.middleware.base import Batch, Middleware
from hub.ratelimit import RateLimiter
from hub.settings import Rate
from hub.store.models import NotificationStatus


class RateLimit(Middleware):
    """Hold back what the channel's rate limit (or a provider's pause) does not let go now."""

    def __init__(self, limiter: RateLimiter | None) -> None:
        self._limiter = limiter

    def before_send(self, batch: Batch) -> None:
        if self._limiter is None:
            return
        limits = batch.settings.channels.of(batch.channel)
        rate = Rate.parse(limits.rate_limit) if limits.rate_limit else None
        ready = [turn for turn in batch.undecided() if turn.message is not None]
        # Without a rate limit only a provider's pause can hold the batch: one look for all.
        for index, _ in enumerate(ready if rate else ready[:1]):
            if rate is None:
                wait_s = self._limiter.paused_for(batch.channel)
            else:
                wait_s = self._limiter.acquire(batch.channel, rate, limits.burst)
            if wait_s > 0:
                interval_s = rate.interval_ms / 1000 if rate else 0.0
                for n, turn in enumerate(ready[index:]):
                    delay = wait_s + n * interval_s + random.uniform(0, 0.02)
                    reason = f"rate_limited: {batch.channel} is at its rate limit"
                    turn.decide(NotificationStatus.WAITING, reason, retry_in_s=delay)
                return

    def after_send(self, batch: Batch) -> None:
        if self._limiter is None:
            return
        pauses = [
            turn.result.retry_after_s
            for turn in batch.turns
            if isinstance(turn.result, ChannelError) and turn.result.retry_after_s
        ]
        if pauses:
            cap_s = batch.settings.delivery.max_retry_after_s
            self._limiter.pause(batch.channel, min(max(pauses), cap_s))
