"""Circuits shared by every worker: one Redis hash per circuit, changed by atomic scripts.

The scripts read Redis's clock (``TIME``), so workers on different machines
agree on when a circuit may be probed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, cast

import redis

from hub.circuit.base import Circuit, CircuitBreakers, State, Verdict

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS[1]: the circuit's hash. ARGV[1]: open_for in ms.
# Returns {decision, wait_ms}: 0 closed, 1 probe, 2 open.
_ALLOW = (
    "redis.replicate_commands()"
    + _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {0, 0} end
local open_for = tonumber(ARGV[1])
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or now)
if state == 'open' and now < since + open_for then return {2, since + open_for - now} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or 0)
if probe_until > now then return {2, probe_until - now} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + open_for)
return {1, 0}
"""
)

# KEYS[1]: the circuit's hash. ARGV: answered, failed, error, threshold.
_RECORD = (
    "redis.replicate_commands()"
    + _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if tonumber(ARGV[1]) > 0 then
  if state ~= 'closed' then redis.call('HSET', KEYS[1], 'state', 'closed', 'since', now) end
  redis.call('HSET', KEYS[1], 'failures', 0, 'probe_until', 0)
  return 0
end
local failed = tonumber(ARGV[2])
if failed == 0 then return 0 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', failed)
redis.call('HSET', KEYS[1], 'last_error', ARGV[3])
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[4])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'probe_until', 0)
end
return 0
"""
)

# KEYS[1]: the circuit's hash.
_RELEASE_PROBE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'probe_until', 0)
end
return 0
"""

_DECISIONS: tuple[Literal["closed", "probe", "open"], ...] = ("closed", "probe", "open")


class RedisCircuitBreakers(CircuitBreakers):
    """Circuits in Redis under ``prefix``, shared by every process that uses it."""

    def __init__(self, client: redis.Redis, prefix: str = "hub:circuit") -> None:
        self._client = client
        self._prefix = prefix
        self._allow = client.register_script(_ALLOW)
        self._record = client.register_script(_RECORD)
        self._release_probe = client.register_script(_RELEASE_PROBE)

    @classmethod
    def from_url(cls, url: str) -> RedisCircuitBreakers:
        return cls(redis.Redis.from_url(url))

    def allow(self, name: str, open_for_s: float) -> Verdict:
        decision, wait_ms = self._allow(keys=[self._key(name)], args=[int(open_for_s * 1000)])
        return Verdict(_DECISIONS[int(decision)], int(wait_ms) / 1000)

    def record(self, name: str, *, answered: int, failed: int, error: str, threshold: int) -> None:
        self._record(keys=[self._key(name)], args=[answered, failed, error[:500], threshold])

    def release_probe(self, name: str) -> None:
        self._release_probe(keys=[self._key(name)])

    def state(self, name: str) -> Circuit:
        fields: dict[bytes, bytes] = self._client.hgetall(self._key(name))  # type: ignore[assignment]

        def field(key: str, default: str) -> str:
            return fields.get(key.encode(), default.encode()).decode()

        state = cast(State, field("state", "closed"))
        since_ms = field("since", "")
        since = datetime.fromtimestamp(int(since_ms) / 1000, UTC) if since_ms else None
        return Circuit(state, since, int(field("failures", "0")), field("last_error", ""))

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"
