"""Spec: every rate limiter backend keeps one contract; Redis's holds across processes.

The contract runs over the Redis backend and the in-process stub. The stub's
clock is driven by hand; Redis's is real, so its waits are short and its
timings asserted in generous ranges.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from hub.errors import ConfigError
from hub.ratelimit import (
    MAX_PAUSE_S,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    StubRateLimiter,
)


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["redis", "stub"])
def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> RateLimiter:
    if request.param == "redis":
        url = request.getfixturevalue("broker_url")
        return RedisRateLimiter(redis.Redis.from_url(url), prefix=f"test:{uuid.uuid4().hex}")
    return StubRateLimiter(clock=clock)


@pytest.fixture
def elapse(limiter: RateLimiter, clock: FakeClock) -> Callable[[float], None]:
    """Let ``seconds`` pass for the limiter: the stub's clock moves, Redis's is waited for."""

    def elapse(seconds: float) -> None:
        if isinstance(limiter, StubRateLimiter):
            clock.now += seconds
        else:
            time.sleep(seconds)

    return elapse


@pytest.mark.parametrize(
    ("text", "interval_ms"),
    [
        ("10/s", 100),
        ("1/s", 1000),
        ("50/m", 1200),
        ("1/5s", 5000),
        ("2/ms", 0.5),
        ("3600/h", 1000),
        ("24/d", 3_600_000),
    ],
)
def test_rates_parse_to_an_emission_interval(text: str, interval_ms: float) -> None:
    assert Rate.parse(text).interval_ms == pytest.approx(interval_ms)


@pytest.mark.parametrize(
    "text", ["", "10", "ten/s", "0/s", "10/day", "-1/s", "1/0s", "1/999999999999d", "1e9/s"]
)
def test_bad_rates_are_config_errors_naming_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid rate"):
        Rate.parse(text)


# The contract, over every backend.


def test_the_first_token_is_free(limiter: RateLimiter) -> None:
    assert limiter.acquire("sms", Rate.parse("1/s")) == 0


def test_the_next_token_waits_about_one_interval(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    limiter.acquire("sms", rate)
    wait = limiter.acquire("sms", rate)

    assert 0.5 < wait <= 1.0


def test_after_the_reported_wait_a_token_is_free(
    limiter: RateLimiter, elapse: Callable[[float], None]
) -> None:
    rate = Rate.parse("5/s")
    limiter.acquire("sms", rate)
    wait = limiter.acquire("sms", rate)

    elapse(wait)

    assert 0 < wait <= 0.2
    assert limiter.acquire("sms", rate) == 0


def test_burst_allows_that_many_at_once(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    waits = [limiter.acquire("slack", rate, burst=3) for _ in range(4)]

    assert waits[:3] == [0, 0, 0]
    assert 0.5 < waits[3] <= 1.0


def test_reserving_takes_each_slot_one_interval_apart(limiter: RateLimiter) -> None:
    rate = Rate.parse("2/s")

    waits = limiter.reserve("webhook", rate, burst=2, count=5)

    assert waits[:2] == [0, 0]
    assert waits[2:] == pytest.approx([0.5, 1.0, 1.5], abs=0.05)


def test_a_token_after_reserved_slots_waits_behind_them(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")
    limiter.reserve("webhook", rate, burst=1, count=3)

    wait = limiter.acquire("webhook", rate)

    assert 2.5 < wait <= 3.0


def test_reserving_nothing_takes_nothing(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    assert limiter.reserve("webhook", rate, burst=1, count=0) == []
    assert limiter.acquire("webhook", rate) == 0


def test_limits_are_separate_per_name(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    assert limiter.acquire("a", rate) == 0
    assert limiter.acquire("b", rate) == 0


def test_nothing_is_paused_until_told(limiter: RateLimiter) -> None:
    assert limiter.paused_for("sms") == 0


def test_a_pause_makes_every_acquire_wait_and_is_reported(limiter: RateLimiter) -> None:
    limiter.pause("sms", 5)

    wait = limiter.acquire("sms", Rate.parse("100/s"))

    assert 4.0 < wait <= 5.0
    assert 4.0 < limiter.paused_for("sms") <= 5.0
    assert limiter.paused_for("email") == 0


def test_a_pause_ends_after_its_duration(
    limiter: RateLimiter, elapse: Callable[[float], None]
) -> None:
    limiter.pause("sms", 0.1)

    elapse(0.15)

    assert limiter.paused_for("sms") == 0
    assert limiter.acquire("sms", Rate.parse("100/s")) == 0


def test_an_absurd_pause_is_clamped_to_the_cap(limiter: RateLimiter) -> None:
    limiter.pause("sms", 10 * 365 * 86_400)  # "Retry-After: ten years"

    assert MAX_PAUSE_S - 60 < limiter.paused_for("sms") <= MAX_PAUSE_S
    assert MAX_PAUSE_S - 60 < limiter.acquire("sms", Rate.parse("1/s")) <= MAX_PAUSE_S


@pytest.mark.parametrize("seconds", [0, -5, float("nan")])
def test_a_pause_of_no_time_pauses_nothing(limiter: RateLimiter, seconds: float) -> None:
    limiter.pause("sms", seconds)

    assert limiter.paused_for("sms") == 0


# Redis only: the point of keeping limits there.


def _grab(url: str, prefix: str, start: float, deadline: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RedisRateLimiter(redis.Redis.from_url(url), prefix=prefix)
    granted = 0
    while time.time() < start:
        pass
    while time.time() < deadline:
        if limiter.acquire("shared", Rate.parse("20/s")) == 0:
            granted += 1
    out.put(granted)


def test_four_processes_together_get_no_more_than_the_limit(broker_url: str) -> None:
    prefix, window_s = f"test:{uuid.uuid4().hex}", 1.5
    # Spawned, not forked: the test process runs threads (SMTP server, ...).
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.time() + 5  # every process is up before anyone takes a token
    workers = [
        context.Process(target=_grab, args=(broker_url, prefix, start, start + window_s, out))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    granted = sum(out.get(timeout=30) for _ in workers)
    for worker in workers:
        worker.join()

    # 20/s over 1.5 s is 30 tokens, +1 for the first one at t=0.
    assert 25 <= granted <= 31
