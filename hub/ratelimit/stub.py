"""Rate limits kept in this process: the Redis backend's GCRA, in Python.

For tests (drive ``clock`` by hand instead of sleeping) and for a single
process that has no Redis. Limits are not shared with any other process.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from hub.ratelimit.base import RateLimiter
from hub.settings import Rate


class StubRateLimiter(RateLimiter):
    """Limits in a dict, timed by ``clock`` (seconds; only differences matter)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # a `--pool threads` worker shares one limiter
        self._arrival_ms: dict[str, float] = {}  # each limit's theoretical arrival time
        self._paused_until_ms: dict[str, float] = {}

    def acquire(self, name: str, rate: Rate, burst: int = 1) -> float:
        with self._lock:
            now = self._now_ms()
            paused_ms = self._paused_until_ms.get(name, now) - now
            if paused_ms > 0:
                return math.ceil(paused_ms) / 1000
            interval = rate.interval_ms
            arrival = max(self._arrival_ms.get(name, now), now)
            wait_ms = arrival - now - (max(burst, 1) - 1) * interval
            if wait_ms > 0:
                return math.ceil(wait_ms) / 1000
            self._arrival_ms[name] = arrival + interval
            return 0.0

    def reserve(self, name: str, rate: Rate, burst: int, count: int) -> list[float]:
        with self._lock:
            now, interval = self._now_ms(), rate.interval_ms
            tolerance = (max(burst, 1) - 1) * interval
            arrival = max(self._arrival_ms.get(name, now), now)
            waits = []
            for _ in range(count):
                waits.append(max(math.ceil(arrival - now - tolerance), 0) / 1000)
                arrival += interval
            if count > 0:
                self._arrival_ms[name] = arrival
            return waits

    def paused_for(self, name: str) -> float:
        with self._lock:
            now = self._now_ms()
            return max(self._paused_until_ms.get(name, now) - now, 0.0) / 1000

    def _hold(self, name: str, milliseconds: int) -> None:
        with self._lock:
            self._paused_until_ms[name] = self._now_ms() + milliseconds

    def _now_ms(self) -> float:
        return self._clock() * 1000
