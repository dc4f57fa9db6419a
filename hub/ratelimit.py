"""Rate limits shared by every worker: GCRA in one atomic Redis script.

Celery's own ``rate_limit`` counts per worker process, so four workers sharing
one Twilio number would send four times too fast. Here every worker asks one
Redis key per limit; the script reads Redis's clock (``TIME``), so workers on
different machines share one clock too. A provider's ``429 Retry-After``
pauses the whole channel through a second key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import redis

from hub.errors import ConfigError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(ms|s|m|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}

# KEYS[1]: the limit's theoretical arrival time (ms); KEYS[2]: the channel's pause.
# ARGV[1]: emission interval in ms; ARGV[2]: burst (requests allowed at once).
# Returns 0 when a token was taken, else the milliseconds to wait for one.
_GCRA = """
redis.replicate_commands()
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return pause end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now + interval))
return 0
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period_ms``, e.g. ``Rate.parse("10/s")``."""

    count: float
    period_ms: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``N/s``, ``N/m``, ``N/h``, ``N/ms`` or ``N/10s``."""
        match = _RATE.match(text)
        if not match or float(match.group(1)) <= 0:
            raise ConfigError(f"invalid rate {text!r}: expected e.g. '10/s', '50/m', '1/5s'")
        periods = int(match.group(2) or 1)
        return cls(float(match.group(1)), periods * _UNIT_MS[match.group(3)])

    @property
    def interval_ms(self) -> float:
        return self.period_ms / self.count


class RateLimiter:
    """Takes tokens from limits kept in Redis; never sleeps."""

    def __init__(self, client: redis.Redis, prefix: str = "hub:rate") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)

    def acquire(self, name: str, rate: Rate, burst: int = 1) -> float:
        """Take a token for ``name``: 0.0 if taken, else the seconds until one is free."""
        keys = [f"{self._prefix}:{name}", f"{self._prefix}:{name}:pause"]
        wait_ms = int(self._script(keys=keys, args=[rate.interval_ms, max(burst, 1)]))
        return wait_ms / 1000

    def paused_for(self, name: str) -> float:
        """Seconds left of a pause of ``name``; 0.0 when it is not paused."""
        remaining_ms = int(self._client.pttl(f"{self._prefix}:{name}:pause"))
        return max(remaining_ms, 0) / 1000

    def pause(self, name: str, seconds: float) -> None:
        """Stop every worker taking tokens for ``name`` for ``seconds`` (a provider's 429)."""
        if seconds > 0:
            key = f"{self._prefix}:{name}:pause"
            self._client.set(key, 1, px=math.ceil(seconds * 1000))
