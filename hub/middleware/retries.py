"""Retries: a transient failure runs again after full-jitter exponential backoff.

Never sooner than the provider's ``retry_after_s``; an unknown outcome only
when the channel's ``on_unknown`` is ``"retry"``. A budget in time ends the
retries: the channel's ``retry_window`` after the notification was queued,
with ``max_attempts`` as an upper bound inside it, whichever comes first.
"""

from __future__ import annotations

import random

from hub import metrics
from hub.errors import OutcomeUnknown, TransientError
from hub.middleware.base import Batch, Middleware, Turn
from hub.settings import Settings
from hub.store.models import NotificationStatus, utcnow


def max_attempts(settings: Settings, channel: str) -> int:
    """The retry budget of ``channel``."""
    return settings.channels.of(channel).max_attempts or settings.delivery.max_attempts


def window_left_s(settings: Settings, channel: str, turn: Turn) -> float:
    """Seconds left of the channel's retry window for ``turn`` (negative once it is over)."""
    window_s = settings.channels.of(channel).retry_window_s
    return window_s - (utcnow() - turn.notification.created_at).total_seconds()


def window_exhausted(settings: Settings, channel: str, error: object) -> str:
    """The reason of a notification that failed for good at the end of its retry window."""
    window = settings.channels.of(channel).retry_window
    return f"{error} (retry_window_exhausted: still failing {window} after queued)"


def backoff_s(attempt: int, settings: Settings, retry_after_s: float | None = None) -> float:
    """Full-jitter exponential backoff for the retry after attempt number ``attempt``.

    A provider's ``retry_after_s`` is honoured up to
    ``delivery.max_retry_after_s``: a hostile or broken value ("retry in ten
    years") must not park a message beyond what the broker and the sweeper
    can hold.
    """
    policy = settings.delivery
    # The exponent is capped first: 2 ** 1024 overflows a float long before the ceiling applies.
    growth = 2.0 ** min(attempt - 1, 64)
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * growth)
    return max(random.uniform(0, ceiling), min(retry_after_s or 0.0, policy.max_retry_after_s))


# What the core makes of a failure before this middleware looks again.
_CLASSIFIED_FAILURES = (NotificationStatus.FAILED, NotificationStatus.UNKNOWN)


class Retries(Middleware):
    """Turn retryable failures into ``retrying`` with a countdown, within the budget."""

    def after_send(self, batch: Batch) -> None:
        settings = batch.settings
        retry_unknown = settings.channels.of(batch.channel).on_unknown == "retry"
        limit = max_attempts(settings, batch.channel)
        retried = 0
        for turn in batch.turns:
            error = turn.result
            retryable = isinstance(error, TransientError) or (
                isinstance(error, OutcomeUnknown) and retry_unknown
            )
            if not retryable or turn.status not in _CLASSIFIED_FAILURES:
                continue
            assert isinstance(error, TransientError | OutcomeUnknown)
            attempts = turn.notification.attempts
            left_s = window_left_s(settings, batch.channel, turn)
            if attempts >= limit:
                reason = f"{error} (max_attempts: gave up after {attempts} attempts)"
                turn.decide(NotificationStatus.FAILED, reason)
            elif left_s <= 0:
                reason = window_exhausted(settings, batch.channel, error)
                turn.decide(NotificationStatus.FAILED, reason)
            else:
                delay = backoff_s(attempts, settings, error.retry_after_s)
                # The last try falls at the end of the window, not beyond it.
                turn.decide(NotificationStatus.RETRYING, str(error), retry_in_s=min(delay, left_s))
                retried += 1
        metrics.retries(batch.channel, retried)
