"""Circuit breakers: while a provider is down, its notifications wait instead of failing.

Each provider of a channel has a circuit shared by every worker
(:mod:`hub.circuit`). Before a send, providers whose circuit is open are
taken out of each turn's list (the next provider takes over: failover); a
half-open one gets a single probe. A turn left with no provider waits,
spending no attempt, until the circuit may be probed; the time still counts
toward the channel's retry window. After the send, every provider's answers
and failures are counted: any answer closes its circuit, a run of failures
that say the provider is down (no connection, 5xx, 429, no answer) opens it.
"""

from __future__ import annotations

import random

from hub import metrics
from hub.channels.base import Receipt
from hub.circuit import CircuitBreakers
from hub.errors import OutcomeUnknown, PermanentError, TransientError
from hub.middleware.base import Batch, Middleware
from hub.middleware.retries import window_exhausted, window_left_s
from hub.settings import ChannelSettings
from hub.settings.models import CircuitSettings
from hub.store.models import NotificationStatus

# A turn held back from a probe comes back soon: the probe's answer decides.
PROBE_WAIT_S = 1.0


def circuit_name(channel: str, provider: str) -> str:
    return f"{channel}:{provider}"


class CircuitBreaker(Middleware):
    """Hold notifications behind open circuits; count each provider's answers and failures."""

    def __init__(self, breakers: CircuitBreakers) -> None:
        self._breakers = breakers

    def before_send(self, batch: Batch) -> None:
        ready = [turn for turn in batch.undecided() if turn.message is not None]
        if not ready:
            return
        section = batch.settings.channels.of(batch.channel)
        usable, probes, waits = [], set(), []
        for provider in ready[0].providers:
            open_for_s = _circuit_of(section, provider).open_for_s
            verdict = self._breakers.allow(circuit_name(batch.channel, provider), open_for_s)
            metrics.circuit(batch.channel, provider, verdict.decision == "open")
            if verdict.decision == "open":
                waits.append(verdict.wait_s)
                continue
            usable.append(provider)
            if verdict.decision == "probe":
                probes.add(provider)
        batch.probes = probes
        for index, turn in enumerate(ready):
            turn.providers = [p for p in usable if index == 0 or p not in probes]
            if turn.providers:
                continue
            left_s = window_left_s(batch.settings, batch.channel, turn)
            if left_s <= 0:
                reason = window_exhausted(batch.settings, batch.channel, "circuit open")
                turn.decide(NotificationStatus.FAILED, reason)
                continue
            wait_s = min(waits) if waits and not probes else PROBE_WAIT_S
            reason = f"circuit_open: every {batch.channel} provider is down"
            # The last look falls at the end of the retry window, not beyond it.
            retry_in_s = min(wait_s + random.uniform(0, 1), left_s)
            turn.decide(NotificationStatus.WAITING, reason, retry_in_s=retry_in_s)

    def after_send(self, batch: Batch) -> None:
        answered: dict[str, int] = {}
        failed: dict[str, int] = {}
        errors: dict[str, str] = {}
        for turn in batch.turns:
            for provider, result in turn.tried:
                if isinstance(result, Receipt | PermanentError):
                    answered[provider] = answered.get(provider, 0) + 1
                elif isinstance(result, TransientError | OutcomeUnknown):
                    failed[provider] = failed.get(provider, 0) + 1
                    errors[provider] = str(result)
        section = batch.settings.channels.of(batch.channel)
        # A probe no turn went through (a later middleware held its turn back,
        # or an earlier provider sent it) is handed back for the next batch,
        # rather than keeping the circuit half-open for open_for.
        for provider in batch.probes - answered.keys() - failed.keys():
            self._breakers.release_probe(circuit_name(batch.channel, provider))
        for provider in answered.keys() | failed.keys():
            self._breakers.record(
                circuit_name(batch.channel, provider),
                answered=answered.get(provider, 0),
                failed=failed.get(provider, 0),
                error=errors.get(provider, ""),
                threshold=_circuit_of(section, provider).failures,
            )


def _circuit_of(section: ChannelSettings, provider: str) -> CircuitSettings:
    """A provider's own circuit settings (it inherits its section's unless it sets them)."""
    own = section.provider(provider)
    return (own or section).circuit
