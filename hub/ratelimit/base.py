"""The rate limiter contract every backend keeps."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from hub.settings import Rate

# A provider's Retry-After is a hint, not an order: a broken or hostile one
# ("retry in 10 years") must not silence a channel until someone notices.
# Past an hour the next attempt just asks again and is told to wait again.
MAX_PAUSE_S = 3600.0


class RateLimiter(ABC):
    """Named limits (GCRA) and pauses; takes tokens, never sleeps.

    A limit lets ``burst`` requests through at once, then one every
    ``rate.interval_ms``. A pause (a provider's 429) blocks every token of its
    name until it ends.
    """

    @abstractmethod
    def acquire(self, name: str, rate: Rate, burst: int = 1) -> float:
        """Take a token for ``name``: 0.0 if taken, else the seconds until one is free."""

    @abstractmethod
    def reserve(self, name: str, rate: Rate, burst: int, count: int) -> list[float]:
        """Take ``count`` tokens for ``name`` now, each for its own slot, however far off.

        The seconds to wait for each slot (0.0 for those free now). A reserved
        token is spent: whoever holds it sends at its slot without asking again.
        """

    @abstractmethod
    def paused_for(self, name: str) -> float:
        """Seconds left of a pause of ``name``; 0.0 when it is not paused."""

    def pause(self, name: str, seconds: float) -> None:
        """Stop every token for ``name`` for ``seconds``, at most :data:`MAX_PAUSE_S`."""
        if seconds > 0:  # also false for NaN
            self._hold(name, math.ceil(min(seconds, MAX_PAUSE_S) * 1000))

    @abstractmethod
    def _hold(self, name: str, milliseconds: int) -> None:
        """Pause ``name`` for ``milliseconds`` (positive, already clamped)."""
