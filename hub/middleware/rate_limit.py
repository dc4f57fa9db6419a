"""Rate limits shared by every worker, and the pause a provider asks for.

Tokens are taken after the claim and rendering, right before the sends: a
slow claim must not bunch sends together at the provider. A turn that must
wait reserves its slot, is released (claim and attempt undone, no attempt
spent) and comes back at that slot holding its token, so it never has to ask
and wait again. A provider's ``retry_after_s`` pauses the channel for every
worker.
"""

from __future__ import annotations

import random

from hub import metrics
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
        ready = [turn for turn in batch.undecided() if turn.message is not None]
        if self._limiter is None or not ready:
            return
        reason = f"rate_limited: {batch.channel} is at its rate limit"
        if (paused_s := self._limiter.paused_for(batch.channel)) > 0:
            # A provider asked everyone to hold off, reserved slots or not.
            for turn in ready:
                delay = paused_s + random.uniform(0, 0.02)
                turn.decide(NotificationStatus.WAITING, reason, retry_in_s=delay)
            metrics.rate_limit_waits(batch.channel, [paused_s] * len(ready))
            return
        limits = batch.settings.channels.of(batch.channel)
        if not limits.rate_limit or batch.reserved:
            return
        rate = Rate.parse(limits.rate_limit)
        # Every turn reserves its slot now, so a wait comes back once, when due.
        waits = self._limiter.reserve(batch.channel, rate, limits.burst, len(ready))
        metrics.rate_limit_waits(batch.channel, [wait_s for wait_s in waits if wait_s > 0])
        for turn, wait_s in zip(ready, waits, strict=True):
            if wait_s > 0:
                # Never early: a small lateness only, so workers do not wake together.
                delay = wait_s + random.uniform(0, 0.01)
                turn.decide(NotificationStatus.WAITING, reason, retry_in_s=delay)
                turn.holds_token = True

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
