"""Spec: rate limits are shared through Redis, so they hold across every worker process."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest
import redis

from hub.errors import ConfigError
from hub.ratelimit import Rate, RateLimiter


@pytest.fixture
def limiter(broker_url: str) -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(broker_url), prefix=f"test:{uuid.uuid4().hex}")


@pytest.mark.parametrize(
    ("text", "interval_ms"),
    [("10/s", 100), ("1/s", 1000), ("50/m", 1200), ("1/5s", 5000), ("2/ms", 0.5), ("3600/h", 1000)],
)
def test_rates_parse_to_an_emission_interval(text: str, interval_ms: float) -> None:
    assert Rate.parse(text).interval_ms == pytest.approx(interval_ms)


@pytest.mark.parametrize("text", ["", "10", "ten/s", "0/s", "10/day", "-1/s"])
def test_bad_rates_are_config_errors_naming_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid rate"):
        Rate.parse(text)


def test_a_token_is_granted_then_the_wait_until_the_next_is_reported(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    first = limiter.acquire("sms", rate)
    second = limiter.acquire("sms", rate)

    assert first == 0
    assert 0.9 <= second <= 1.0


def test_burst_allows_that_many_at_once(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    waits = [limiter.acquire("slack", rate, burst=3) for _ in range(4)]

    assert waits[:3] == [0, 0, 0]
    assert waits[3] > 0


def test_limits_are_separate_per_name(limiter: RateLimiter) -> None:
    rate = Rate.parse("1/s")

    assert limiter.acquire("a", rate) == 0
    assert limiter.acquire("b", rate) == 0


def test_a_pause_makes_every_acquire_wait(limiter: RateLimiter) -> None:
    limiter.pause("sms", 5)

    wait = limiter.acquire("sms", Rate.parse("100/s"))

    assert 4.0 < wait <= 5.0


def _grab(url: str, prefix: str, start: float, deadline: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RateLimiter(redis.Redis.from_url(url), prefix=prefix)
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
