"""Rate limits for channels: one contract, a Redis backend and an in-process stub.

:class:`RateLimiter` is the contract (GCRA: take a token or learn how long to
wait; never sleep). :class:`RedisRateLimiter` shares limits between every
worker through Redis; :class:`StubRateLimiter` keeps them in this process, for
tests and for a single process without Redis.
"""

from hub.ratelimit.base import MAX_PAUSE_S, RateLimiter
from hub.ratelimit.redis import RedisRateLimiter
from hub.ratelimit.stub import StubRateLimiter
from hub.settings import Rate

__all__ = ["MAX_PAUSE_S", "Rate", "RateLimiter", "RedisRateLimiter", "StubRateLimiter"]
