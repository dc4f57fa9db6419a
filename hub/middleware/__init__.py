"""Delivery policy as middleware around the delivery core (:mod:`hub.delivery`).

Each policy is one class in one module; :func:`default_middleware` is the one
place that orders them. Order matters: opt-outs, the poison guard and open
circuits decide before the rate limit spends tokens, and retries settle a
failure before the announcer sees whether it is final. Completion comes
after every other policy has settled the batch's fates; status webhooks
last, as they only enqueue reports of what was recorded.
"""

from __future__ import annotations

from hub.circuit import CircuitBreakers
from hub.middleware.announcer import Announcer, Publish
from hub.middleware.base import Batch, Middleware, Turn
from hub.middleware.circuit import CircuitBreaker
from hub.middleware.completion import Completion
from hub.middleware.expiry import Expiry
from hub.middleware.opt_out import OptOut
from hub.middleware.poison import PoisonGuard
from hub.middleware.rate_limit import RateLimit
from hub.middleware.retries import Retries
from hub.middleware.status_webhooks import StatusWebhooks
from hub.ratelimit import RateLimiter


def default_middleware(
    limiter: RateLimiter | None, breakers: CircuitBreakers, publish: Publish
) -> list[Middleware]:
    """The hub's delivery policies, in the order their hooks run."""
    return [
        Expiry(),
        OptOut(),
        PoisonGuard(),
        CircuitBreaker(breakers),
        RateLimit(limiter),
        Retries(),
        Announcer(publish),
        Completion(publish),
        StatusWebhooks(),
    ]


__all__ = [
    "Announcer",
    "Batch",
    "CircuitBreaker",
    "Completion",
    "Expiry",
    "Middleware",
    "OptOut",
    "PoisonGuard",
    "RateLimit",
    "Retries",
    "StatusWebhooks",
    "Turn",
    "default_middleware",
]
