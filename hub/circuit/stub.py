"""Circuits kept in this process, timed by a clock a test can drive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.circuit.base import Circuit, CircuitBreakers, State, Verdict


@dataclass
class _Record:
    state: State = "closed"
    failures: int = 0
    since: float | None = None
    probe_until: float = 0.0
    last_error: str = ""


class StubCircuitBreakers(CircuitBreakers):
    """The Redis backend's rules over a dict, for tests and a single process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Record] = {}

    def allow(self, name: str, open_for_s: float) -> Verdict:
        with self._lock:
            now, circuit = self._clock(), self._circuits.setdefault(name, _Record())
            if circuit.state == "closed":
                return Verdict("closed")
            if circuit.state == "open" and circuit.since is not None:
                reopens = circuit.since + open_for_s
                if now < reopens:
                    return Verdict("open", reopens - now)
            if circuit.probe_until > now:
                return Verdict("open", circuit.probe_until - now)
            circuit.state, circuit.probe_until = "half_open", now + open_for_s
            return Verdict("probe")

    def record(self, name: str, *, answered: int, failed: int, error: str, threshold: int) -> None:
        with self._lock:
            now, circuit = self._clock(), self._circuits.setdefault(name, _Record())
            if answered:
                if circuit.state != "closed":
                    circuit.state, circuit.since = "closed", now
                circuit.failures, circuit.probe_until = 0, 0.0
            elif failed:
                circuit.failures += failed
                circuit.last_error = error[:500]  # as the Redis backend keeps it
                if circuit.state == "half_open" or (
                    circuit.state == "closed" and circuit.failures >= threshold
                ):
                    circuit.state, circuit.since, circuit.probe_until = "open", now, 0.0

    def release_probe(self, name: str) -> None:
        with self._lock:
            circuit = self._circuits.setdefault(name, _Record())
            if circuit.state == "half_open":
                circuit.probe_until = 0.0

    def state(self, name: str) -> Circuit:
        with self._lock:
            circuit = self._circuits.get(name, _Record())
            since = None if circuit.since is None else datetime.fromtimestamp(circuit.since, UTC)
            return Circuit(circuit.state, since, circuit.failures, circuit.last_error)
