"""Circuit breakers per channel provider: a base, a Redis backend shared by workers, a stub."""

from hub.circuit.base import Circuit, CircuitBreakers, State, Verdict
from hub.circuit.redis import RedisCircuitBreakers
from hub.circuit.stub import StubCircuitBreakers


def circuit_breakers(redis_url: str) -> CircuitBreakers:
    """Circuits shared through Redis at ``redis_url``; without one, this process's own."""
    if not redis_url:
        return StubCircuitBreakers()
    return RedisCircuitBreakers.from_url(redis_url)


__all__ = [
    "Circuit",
    "CircuitBreakers",
    "RedisCircuitBreakers",
    "State",
    "StubCircuitBreakers",
    "Verdict",
    "circuit_breakers",
]
