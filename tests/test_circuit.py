"""Spec: circuit breakers, the contract every backend keeps, and the middleware that uses them.

The contract table runs over the Redis backend (real Redis, its own clock,
a short ``open_for`` waited out by polling Redis's ``TIME``) and the stub (a
clock that moves only when told). The middleware specs build turns by hand,
as in ``test_middleware.py``, over the stub on a fake clock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import pytest
import redis

from hub.channels.base import Message, Receipt
from hub.circuit import CircuitBreakers, RedisCircuitBreakers, StubCircuitBreakers
from hub.errors import ChannelError, OutcomeUnknown, PermanentError, TransientError
from hub.middleware import Batch, CircuitBreaker, Turn
from hub.middleware.circuit import PROBE_WAIT_S, circuit_name
from hub.settings import Settings, load_settings
from hub.store.models import NotificationStatus, utcnow
from hub.store.notifications import Claimed
from tests.conftest import wait_until

THRESHOLD = 3
CIRCUIT = "sms:primary"


@dataclass
class FakeClock:
    """A clock that moves only when told."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


# ---- The backends under the contract -----------------------------------------------------------


class Backend(Protocol):
    """A backend and a way to let its clock run."""

    breakers: CircuitBreakers
    open_for_s: float

    def let_pass(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on the backend's clock."""

    def wait_out_open_for(self, name: str) -> None:
        """Return once the open circuit ``name`` has been open for ``open_for_s``."""


class StubBackend:
    open_for_s = 30.0

    def __init__(self) -> None:
        # Whole seconds, so ``since`` (a datetime, to the microsecond) converts back exactly.
        self.clock = FakeClock(float(int(time.time())))
        self.breakers: CircuitBreakers = StubCircuitBreakers(clock=self.clock)

    def let_pass(self, seconds: float) -> None:
        self.clock.now += seconds

    def wait_out_open_for(self, name: str) -> None:
        since = self.breakers.state(name).since
        assert since is not None, f"{name} was never opened"
        self.clock.now = max(self.clock.now, since.timestamp() + self.open_for_s)


class RedisBackend:
    open_for_s = 0.3

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = f"test:circuit:{uuid.uuid4().hex}"
        self.breakers: CircuitBreakers = RedisCircuitBreakers(self.client, self.prefix)

    def let_pass(self, seconds: float) -> None:
        self._until_ms(self._now_ms() + round(seconds * 1000))

    def wait_out_open_for(self, name: str) -> None:
        since = self.breakers.state(name).since
        assert since is not None, f"{name} was never opened"
        self._until_ms(round(since.timestamp() * 1000) + round(self.open_for_s * 1000))

    def close(self) -> None:
        keys = list(self.client.scan_iter(f"{self.prefix}:*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()

    def _now_ms(self) -> int:
        # The scripts' clock, read the way they read it.
        seconds, micros = self.client.time()  # type: ignore[misc]
        return int(seconds) * 1000 + int(micros) // 1000

    def _until_ms(self, target_ms: int) -> None:
        wait_until(lambda: self._now_ms() >= target_ms, 5.0, f"Redis TIME to reach {target_ms}")


@pytest.fixture(params=["redis", "stub"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend, with circuits of its own (a fresh Redis prefix per test)."""
    if request.param == "stub":
        yield StubBackend()
        return
    real = RedisBackend(request.getfixturevalue("broker_url"))
    yield real
    real.close()


def fail(breakers: CircuitBreakers, times: int = 1, error: str = "sms [503]: down") -> None:
    """``times`` failed sends through CIRCUIT, recorded one by one."""
    for _ in range(times):
        breakers.record(CIRCUIT, answered=0, failed=1, error=error, threshold=THRESHOLD)


def answer(breakers: CircuitBreakers) -> None:
    breakers.record(CIRCUIT, answered=1, failed=0, error="", threshold=THRESHOLD)


def open_and_wait_out(backend: Backend) -> None:
    """Given an open CIRCUIT whose open_for is over."""
    fail(backend.breakers, THRESHOLD)
    backend.wait_out_open_for(CIRCUIT)


# ---- The contract, over every backend ----------------------------------------------------------


def test_a_new_circuit_is_closed(backend: Backend) -> None:
    # Given a circuit nobody used
    # Then sends go through, and it reports closed, never opened, no failures
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "closed"
    circuit = backend.breakers.state(CIRCUIT)
    assert (circuit.state, circuit.since, circuit.failures, circuit.last_error) == (
        "closed",
        None,
        0,
        "",
    )


def test_failures_below_the_threshold_keep_it_closed(backend: Backend) -> None:
    # Given one failure fewer than the threshold
    fail(backend.breakers, THRESHOLD - 1)

    # Then sends still go through
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "closed"
    assert backend.breakers.state(CIRCUIT).state == "closed"
    assert backend.breakers.state(CIRCUIT).failures == THRESHOLD - 1


def test_reaching_the_threshold_opens_it_for_about_open_for(backend: Backend) -> None:
    # Given one failure short of the threshold
    fail(backend.breakers, THRESHOLD - 1)

    # When the next failure reaches it
    started = time.monotonic()
    fail(backend.breakers)
    verdict = backend.breakers.allow(CIRCUIT, backend.open_for_s)
    elapsed_s = time.monotonic() - started

    # Then the circuit is open, and callers wait what is left of open_for
    assert backend.breakers.state(CIRCUIT).state == "open"
    assert verdict.decision == "open"
    assert backend.open_for_s - elapsed_s - 0.01 <= verdict.wait_s <= backend.open_for_s


def test_failures_recorded_together_count_each(backend: Backend) -> None:
    # When a batch reports as many failures as the threshold in one record
    backend.breakers.record(
        CIRCUIT, answered=0, failed=THRESHOLD, error="down", threshold=THRESHOLD
    )

    # Then the circuit opens
    assert backend.breakers.state(CIRCUIT).state == "open"
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "open"


def test_an_answer_resets_the_failure_count(backend: Backend) -> None:
    # Given failures just short of the threshold, then an answer
    fail(backend.breakers, THRESHOLD - 1)
    answer(backend.breakers)
    assert backend.breakers.state(CIRCUIT).failures == 0

    # When as many failures follow
    fail(backend.breakers, THRESHOLD - 1)

    # Then they count from zero: the circuit stays closed
    assert backend.breakers.state(CIRCUIT).failures == THRESHOLD - 1
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "closed"


def test_after_open_for_exactly_one_of_many_callers_gets_the_probe(backend: Backend) -> None:
    # Given an open circuit whose open_for is over
    open_and_wait_out(backend)
    callers = 8
    start = threading.Barrier(callers)
    decisions: list[str] = []

    def call() -> None:
        start.wait()
        decisions.append(backend.breakers.allow(CIRCUIT, backend.open_for_s).decision)

    # When many workers ask at once
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then exactly one holds the probe and the circuit is half-open
    assert sorted(decisions) == ["open"] * (callers - 1) + ["probe"]
    assert backend.breakers.state(CIRCUIT).state == "half_open"


def test_while_the_probe_is_out_the_next_caller_is_told_to_wait(backend: Backend) -> None:
    # Given an open circuit whose open_for is over, and a caller that took the probe
    open_and_wait_out(backend)
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "probe"

    # When the next caller asks
    verdict = backend.breakers.allow(CIRCUIT, backend.open_for_s)

    # Then it must wait, at most open_for (the probe's answer or its expiry decides)
    assert verdict.decision == "open"
    assert 0 < verdict.wait_s <= backend.open_for_s


def test_a_probe_handed_back_unsent_goes_to_the_next_caller(backend: Backend) -> None:
    # Given a caller that took the probe and then did not send it
    open_and_wait_out(backend)
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "probe"

    # When it hands the probe back
    backend.breakers.release_probe(CIRCUIT)

    # Then the next caller probes at once, and the circuit is still half-open
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "probe"
    assert backend.breakers.state(CIRCUIT).state == "half_open"


def test_handing_back_a_probe_never_reopens_a_closed_circuit_for_probing(backend: Backend) -> None:
    # Given a closed circuit
    # When a late caller hands back a probe it no longer needs
    backend.breakers.release_probe(CIRCUIT)

    # Then it is still closed
    assert backend.breakers.state(CIRCUIT).state == "closed"
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "closed"


def test_a_probe_that_is_answered_closes_the_circuit(backend: Backend) -> None:
    # Given a caller holding the probe of a half-open circuit
    open_and_wait_out(backend)
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "probe"

    # When the provider answers it
    answer(backend.breakers)

    # Then the circuit is closed, its failures forgotten, and every caller may send
    circuit = backend.breakers.state(CIRCUIT)
    assert (circuit.state, circuit.failures) == ("closed", 0)
    for _ in range(3):
        assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "closed"


def test_a_probe_that_fails_opens_the_circuit_again_for_a_fresh_open_for(
    backend: Backend,
) -> None:
    # Given a caller that took the probe, and half of open_for gone since
    open_and_wait_out(backend)
    opened = backend.breakers.state(CIRCUIT).since
    assert backend.breakers.allow(CIRCUIT, backend.open_for_s).decision == "probe"
    backend.let_pass(backend.open_for_s / 2)

    # When the probe fails
    started = time.monotonic()
    fail(backend.breakers, error="sms [503]: still down")
    verdict = backend.breakers.allow(CIRCUIT, backend.open_for_s)
    elapsed_s = time.monotonic() - started

    # Then the circuit is open again from now: callers wait a whole open_for, not what
    # was left of the probe's turn
    circuit = backend.breakers.state(CIRCUIT)
    assert circuit.state == "open"
    assert opened is not None and circuit.since is not None and circuit.since > opened
    assert verdict.decision == "open"
    assert backend.open_for_s - elapsed_s - 0.01 <= verdict.wait_s <= backend.open_for_s


def test_state_reports_state_since_failures_and_last_error(backend: Backend) -> None:
    # Given failures up to the threshold, the last with its own error
    fail(backend.breakers, THRESHOLD - 1, error="sms [503]: down")
    fail(backend.breakers, error="sms [429]: slow down")

    # When someone looks at the circuit
    circuit = backend.breakers.state(CIRCUIT)

    # Then it says open since just now, how many failures, and the last error
    assert circuit.state == "open"
    assert circuit.since is not None
    assert abs(circuit.since - datetime.now(UTC)) < timedelta(seconds=5)
    assert circuit.failures == THRESHOLD
    assert circuit.last_error == "sms [429]: slow down"


# ---- The CircuitBreaker middleware -------------------------------------------------------------


class FakeEvent(NamedTuple):
    """What the hooks read of an ``EventRow``: id, type and data."""

    id: str
    type: str
    data: dict[str, Any]


PROVIDERS = ["primary", "backup"]
FAILURES = 2  # the SMS channel's circuit.failures in these specs
OPEN_FOR_S = 30.0  # and its circuit.open_for


def make_turn(n: int = 1, *, queued_s_ago: float = 0.0) -> Turn:
    """Turn number ``n`` of an SMS batch, rendered, as the core hands it to ``before_send``."""
    recipient = f"+1555000{n:04d}"
    notification = Claimed(
        id=f"ntf_{n}",
        event_id=f"evt_{n}",
        channel="sms",
        recipient=recipient,
        template="user.registered",
        attempts=1,
        created_at=utcnow() - timedelta(seconds=queued_s_ago),
    )
    event = FakeEvent(f"evt_{n}", "user.registered", {"user_id": str(n)})
    message = Message(
        notification_id=notification.id,
        event_id=event.id,
        event_type=event.type,
        recipient=recipient,
        text=f"hello {n}",
    )
    return Turn(notification, event, message=message, providers=list(PROVIDERS))  # type: ignore[arg-type]


def sent_turn(n: int, *tried: tuple[str, Receipt | ChannelError]) -> Turn:
    """Turn ``n`` after the core sent it: every (provider, result) of its attempt."""
    turn = make_turn(n)
    turn.providers = []
    turn.tried = list(tried)
    turn.provider, turn.result = tried[-1]
    return turn


def receipt(n: int = 1) -> Receipt:
    return Receipt(provider_message_id=f"SM{n}")


def transient() -> TransientError:
    return TransientError("provider down", channel="sms", provider_code=503)


def permanent() -> PermanentError:
    return PermanentError("invalid number", channel="sms", provider_code=21211)


def unknown() -> OutcomeUnknown:
    return OutcomeUnknown("timed out after the request went out", channel="sms")


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """SMS through a primary and a backup; circuits open after 2 failures, for 30 s."""
    env = {
        "HUB_CHANNELS__SMS__PROVIDERS": '[{"name": "primary"}, {"name": "backup"}]',
        "HUB_CHANNELS__SMS__CIRCUIT__FAILURES": str(FAILURES),
        "HUB_CHANNELS__SMS__CIRCUIT__OPEN_FOR": "30s",
        "HUB_CHANNELS__SMS__RETRY_WINDOW": "1h",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


class RecordingBreakers(StubCircuitBreakers):
    """The stub, remembering what each ``record`` was told: (answered, failed, error)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.records: dict[str, tuple[int, int, str]] = {}

    def record(self, name: str, *, answered: int, failed: int, error: str, threshold: int) -> None:
        self.records[name] = (answered, failed, error)
        super().record(name, answered=answered, failed=failed, error=error, threshold=threshold)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> RecordingBreakers:
    return RecordingBreakers(clock=clock)


def open_circuit(breakers: CircuitBreakers, provider: str) -> None:
    """Given ``provider``'s circuit opened just now by enough failures."""
    breakers.record(
        circuit_name("sms", provider), answered=0, failed=FAILURES, error="down", threshold=FAILURES
    )


def state_of(breakers: CircuitBreakers, provider: str) -> str:
    return breakers.state(circuit_name("sms", provider)).state


def batch_of(settings: Settings, *turns: Turn) -> Batch:
    return Batch("sms", settings, list(turns))


def test_with_the_primarys_circuit_open_every_turn_fails_over_to_the_backup(
    settings: Settings, breakers: RecordingBreakers
) -> None:
    # Given the primary's circuit is open and the backup's closed
    open_circuit(breakers, "primary")
    batch = batch_of(settings, make_turn(1), make_turn(2), make_turn(3))

    # When the batch is about to be sent
    CircuitBreaker(breakers).before_send(batch)

    # Then every turn is left to send, through the backup only
    assert [turn.status for turn in batch.turns] == [None, None, None]
    assert [turn.providers for turn in batch.turns] == [["backup"]] * 3


def test_with_every_circuit_open_ready_turns_wait_until_the_first_may_be_probed(
    settings: Settings, breakers: RecordingBreakers, clock: FakeClock
) -> None:
    # Given the primary opened 15 s ago and the backup 5 s ago (open for 30 s)
    open_circuit(breakers, "primary")
    clock.now += 10
    open_circuit(breakers, "backup")
    clock.now += 5
    batch = batch_of(settings, make_turn(1), make_turn(2))

    # When the batch is about to be sent
    CircuitBreaker(breakers).before_send(batch)

    # Then each turn waits (spending no attempt) about the 15 s left on the primary, plus jitter
    for turn in batch.turns:
        assert turn.status is NotificationStatus.WAITING
        assert turn.reason.startswith("circuit_open")
        assert turn.retry_in_s is not None and 15 <= turn.retry_in_s <= 16
        assert turn.providers == []


def test_a_half_open_provider_probes_with_the_first_turn_and_the_rest_wait_briefly(
    settings: Settings, breakers: RecordingBreakers, clock: FakeClock
) -> None:
    # Given the primary's open_for is over (a probe is due) and the backup is still open
    open_circuit(breakers, "primary")
    clock.now += 10
    open_circuit(breakers, "backup")
    clock.now += OPEN_FOR_S - 10
    batch = batch_of(settings, make_turn(1), make_turn(2), make_turn(3))

    # When the batch is about to be sent
    CircuitBreaker(breakers).before_send(batch)

    # Then the first turn probes the primary; the others wait about PROBE_WAIT_S for its answer
    first, *rest = batch.turns
    assert (first.status, first.providers) == (None, ["primary"])
    assert state_of(breakers, "primary") == "half_open"
    for turn in rest:
        assert turn.status is NotificationStatus.WAITING
        assert turn.reason.startswith("circuit_open")
        assert turn.retry_in_s is not None
        assert PROBE_WAIT_S <= turn.retry_in_s <= PROBE_WAIT_S + 1


def test_beside_a_probe_the_other_turns_go_to_a_closed_backup(
    settings: Settings, breakers: RecordingBreakers, clock: FakeClock
) -> None:
    # Given the primary's open_for is over (a probe is due) and the backup is closed
    open_circuit(breakers, "primary")
    clock.now += OPEN_FOR_S
    batch = batch_of(settings, make_turn(1), make_turn(2), make_turn(3))

    # When the batch is about to be sent
    CircuitBreaker(breakers).before_send(batch)

    # Then the first turn probes the primary (the backup behind it); the others use the backup
    assert [turn.status for turn in batch.turns] == [None, None, None]
    assert [turn.providers for turn in batch.turns] == [
        ["primary", "backup"],
        ["backup"],
        ["backup"],
    ]


def test_a_turn_past_its_retry_window_fails_while_every_circuit_is_open(
    settings: Settings, breakers: RecordingBreakers
) -> None:
    # Given every circuit open, a turn queued 2 h ago (the window is 1 h) and a fresh one
    open_circuit(breakers, "primary")
    open_circuit(breakers, "backup")
    batch = batch_of(settings, make_turn(1, queued_s_ago=2 * 3600), make_turn(2))

    # When the batch is about to be sent
    CircuitBreaker(breakers).before_send(batch)

    # Then the old one fails for good, naming the exhausted window; the fresh one waits
    old, fresh = batch.turns
    assert old.status is NotificationStatus.FAILED
    assert "retry_window_exhausted" in old.reason
    assert old.retry_in_s is None
    assert fresh.status is NotificationStatus.WAITING


def test_a_probe_whose_turn_was_held_back_is_handed_back(
    settings: Settings, breakers: RecordingBreakers, clock: FakeClock
) -> None:
    # Given the primary is due a probe, the backup closed, and the probing
    # turn then held back by a later middleware (a rate-limit wait)
    open_circuit(breakers, "primary")
    clock.now += OPEN_FOR_S
    batch = batch_of(settings, make_turn(1))
    circuit = CircuitBreaker(breakers)
    circuit.before_send(batch)
    assert batch.turns[0].providers == ["primary", "backup"]
    batch.turns[0].decide(NotificationStatus.WAITING, "rate_limited", retry_in_s=1.0)

    # When the batch's results are in, with nothing sent through the primary
    circuit.after_send(batch)

    # Then the next batch may probe the primary at once
    assert breakers.allow(circuit_name("sms", "primary"), OPEN_FOR_S).decision == "probe"


def test_after_send_counts_each_tried_providers_failures_and_answers(
    settings: Settings, breakers: RecordingBreakers
) -> None:
    # Given a turn that failed on the primary and was then sent by the backup
    batch = batch_of(settings, sent_turn(1, ("primary", transient()), ("backup", receipt())))

    # When its results are in
    CircuitBreaker(breakers).after_send(batch)

    # Then the primary is told one failure, with its error, and the backup one answer
    assert breakers.records == {
        "sms:primary": (0, 1, str(transient())),
        "sms:backup": (1, 0, ""),
    }
    assert breakers.state("sms:primary").failures == 1
    assert state_of(breakers, "primary") == "closed"  # one failure of two


def test_enough_failures_open_the_providers_circuit(
    settings: Settings, breakers: RecordingBreakers
) -> None:
    # Given a batch where the primary failed twice (the threshold): down once, no answer once
    batch = batch_of(
        settings,
        sent_turn(1, ("primary", transient()), ("backup", receipt(1))),
        sent_turn(2, ("primary", unknown())),
    )

    # When its results are in
    CircuitBreaker(breakers).after_send(batch)

    # Then the primary's circuit is open and the next batch goes to the backup
    assert state_of(breakers, "primary") == "open"
    assert state_of(breakers, "backup") == "closed"
    following = batch_of(settings, make_turn(3))
    CircuitBreaker(breakers).before_send(following)
    assert following.turns[0].providers == ["backup"]


def test_a_permanent_error_is_an_answer_that_closes_a_half_open_circuit(
    settings: Settings, breakers: RecordingBreakers, clock: FakeClock
) -> None:
    # Given the primary's probe went out with the first turn of a batch
    open_circuit(breakers, "primary")
    clock.now += OPEN_FOR_S
    middleware = CircuitBreaker(breakers)
    middleware.before_send(batch_of(settings, make_turn(1)))
    assert state_of(breakers, "primary") == "half_open"

    # When the provider rejects that message for good
    middleware.after_send(batch_of(settings, sent_turn(1, ("primary", permanent()))))

    # Then the provider answered: its circuit is closed
    assert breakers.records["sms:primary"] == (1, 0, "")
    assert state_of(breakers, "primary") == "closed"


def test_permanent_errors_never_count_as_failures(
    settings: Settings, breakers: RecordingBreakers
) -> None:
    # Given a batch the primary rejected for good, more times than the threshold
    batch = batch_of(settings, *(sent_turn(n, ("primary", permanent())) for n in range(1, 4)))

    # When its results are in
    CircuitBreaker(breakers).after_send(batch)

    # Then the primary's circuit stays closed with no failures
    circuit = breakers.state("sms:primary")
    assert (circuit.state, circuit.failures) == ("closed", 0)
