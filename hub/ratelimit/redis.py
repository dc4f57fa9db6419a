"""Rate limits shared by every worker: GCRA in one atomic Redis script.

Celery's own ``rate_limit`` counts per worker process, so four workers sharing
one Twilio number would send four times too fast. Here every worker asks one
Redis key per limit; the script reads Redis's clock (``TIME``), so workers on
different machines share one clock too. A provider's ``429 Retry-After``
pauses the whole channel through a second key.
"""

from __future__ import annotations

import redis

from hub.ratelimit.base import RateLimiter
from hub.settings import Rate

# What both scripts start from: Redis's clock, and the limit's theoretical
# arrival time (KEYS[1], ms) given ARGV[1] (emission interval in ms) and
# ARGV[2] (burst: requests allowed at once).
_STATE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
"""

# KEYS[2]: the channel's pause. Returns 0 when a token was taken, else the
# milliseconds to wait for one.
_GCRA = (
    """
redis.replicate_commands()
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return pause end
"""
    + _STATE
    + """
local wait = tat - now - tolerance
if wait > 0 then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now + interval))
return 0
"""
)


# ARGV[3]: how many slots. Returns the milliseconds to wait for each, all taken.
_RESERVE = (
    """
redis.replicate_commands()
"""
    + _STATE
    + """
local waits = {}
for i = 1, tonumber(ARGV[3]) do
  waits[i] = math.max(math.ceil(tat - now - tolerance), 0)
  tat = tat + interval
end
redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now + interval))
return waits
"""
)


class RedisRateLimiter(RateLimiter):
    """Limits kept in Redis, shared by every process that uses the same ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str = "hub:rate") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)
        self._reserve = client.register_script(_RESERVE)

    def acquire(self, name: str, rate: Rate, burst: int = 1) -> float:
        keys = [f"{self._prefix}:{name}", f"{self._prefix}:{name}:pause"]
        wait_ms = int(self._script(keys=keys, args=[rate.interval_ms, max(burst, 1)]))
        return wait_ms / 1000

    def reserve(self, name: str, rate: Rate, burst: int, count: int) -> list[float]:
        if count <= 0:
            return []
        args = [rate.interval_ms, max(burst, 1), count]
        waits = self._reserve(keys=[f"{self._prefix}:{name}"], args=args)
        return [int(wait_ms) / 1000 for wait_ms in waits]

    def paused_for(self, name: str) -> float:
        remaining_ms: int = self._client.pttl(f"{self._prefix}:{name}:pause")  # type: ignore[assignment]
        return max(remaining_ms, 0) / 1000

    def _hold(self, name: str, milliseconds: int) -> None:
        self._client.set(f"{self._prefix}:{name}:pause", 1, px=milliseconds)
