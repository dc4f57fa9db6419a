"""The circuit breaker contract every backend keeps.

One circuit per channel provider, shared by every worker. It opens after
``threshold`` failures in a row that say the provider is down (no connection,
5xx, 429), stays open for ``open_for``, then lets one probe through at a time
(half-open): a probe the provider answers closes it, a failed one opens it
again. While it is open, notifications wait instead of spending attempts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Circuit:
    """What a circuit looks like now, for people (``GET /v1/channels``)."""

    state: State
    since: datetime | None
    failures: int
    last_error: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a worker may send through a circuit now.

    ``closed``: send. ``probe``: this worker holds the one probe of a
    half-open circuit; send one message. ``open``: wait ``wait_s``.
    """

    decision: Literal["closed", "probe", "open"]
    wait_s: float = 0.0


class CircuitBreakers(ABC):
    """Named circuits; every method is one atomic step, safe across workers."""

    @abstractmethod
    def allow(self, name: str, open_for_s: float) -> Verdict:
        """May a send go through ``name`` now? Claims the probe when one is due."""

    @abstractmethod
    def record(self, name: str, *, answered: int, failed: int, error: str, threshold: int) -> None:
        """Count what came back: any answer closes the circuit; failures may open it."""

    @abstractmethod
    def release_probe(self, name: str) -> None:
        """Hand back a probe that was claimed and not sent: the next caller may probe."""

    @abstractmethod
    def state(self, name: str) -> Circuit:
        """The circuit's state now (``closed`` for one never used)."""
