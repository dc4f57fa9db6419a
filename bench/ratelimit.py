"""A channel rate limit holds across worker processes: N workers, one limit, many SMS.

Run by hand: ``python -m bench.ratelimit [--workers 4] [--rate 10/s] [--count 200]``.
It starts an embedded redis-server, a local fake of Twilio's REST API, one
worker for routing and ``--workers`` single-process SMS workers sharing
``channels.sms.rate_limit``, publishes ``--count`` events through Celery's
``send_task("hub.publish")``, and reads the fake's arrival timestamps. It
prints the most SMS seen in any 1-second window and the total time, against
what the limit allows, and writes the result under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery

from hub.embedded import EmbeddedRedis
from hub.settings import Rate, bundled_path
from hub.store.db import migrate
from tests.twilio_fake import TwilioFake, start_fake

BENCH_SETTINGS = """
[events."bench.sms"]
description = "One SMS to data.phone."

[[subscriptions]]
name = "bench-sms"
event = "bench.sms"
channel = "sms"
to = "{{ data.phone }}"
template = "bench.sms"
"""


@dataclass(frozen=True)
class RateResult:
    workers: int
    rate: str
    count: int
    received: int
    max_in_any_1s_window: int
    allowed_per_1s_window: float
    first_to_last_s: float
    expected_s: float


def max_in_window(arrivals: list[float], window_s: float = 1.0) -> int:
    """The most arrivals inside any half-open window ``[t, t + window_s)``."""
    ordered = sorted(arrivals)
    return max(
        (bisect_left(ordered, start + window_s) - i for i, start in enumerate(ordered)),
        default=0,
    )


@contextmanager
def sms_workers(home: Path, workers: int, rate: str, twilio: TwilioFake) -> Iterator[str]:
    """An embedded Redis, a routing worker and ``workers`` SMS workers; yields the broker URL."""
    redis_server = EmbeddedRedis(home / "redis")
    broker_url = redis_server.start()
    templates = home / "templates" / "bench.sms"
    templates.mkdir(parents=True)
    (templates / "body.txt").write_text("Your code is {{ data.code }}")
    settings = home / "settings.toml"
    settings.write_text(bundled_path("settings.toml").read_text() + BENCH_SETTINGS)
    database_url = f"sqlite:///{home / 'hub.db'}"
    migrate(database_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_SETTINGS": str(settings),
        "HUB_BROKER_URL": broker_url,
        "HUB_DATABASE_URL": database_url,
        "HUB_VAR_DIR": str(home / "var"),
        "HUB_TEMPLATE_DIRS": json.dumps([str(home / "templates")]),
        "HUB_CHANNELS__SMS__ACCOUNT_SID": twilio.account_sid,
        "HUB_CHANNELS__SMS__AUTH_TOKEN": twilio.auth_token,
        "HUB_CHANNELS__SMS__FROM_NUMBER": "+14155550000",
        "HUB_CHANNELS__SMS__API_BASE": twilio.base_url,
        "HUB_CHANNELS__SMS__RATE_LIMIT": rate,
    }
    commands = [["worker", "-Q", "celery,events", "--concurrency", "1"]]
    commands += [["worker", "-Q", "sms", "--concurrency", "1"] for _ in range(workers)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "hub", *command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(home / f"worker-{n}.log").open("wb"),
        )
        for n, command in enumerate(commands)
    ]
    try:
        with Celery(broker=broker_url) as probe:
            deadline = time.monotonic() + 60
            while len(probe.control.ping(timeout=0.5)) < len(commands):
                if time.monotonic() > deadline:
                    raise TimeoutError("workers did not start")
        yield broker_url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        redis_server.stop()


def run(workers: int = 4, rate: str = "10/s", count: int = 200) -> RateResult:
    """Send ``count`` SMS through ``workers`` processes sharing one ``rate`` limit."""
    limit = Rate.parse(rate)
    with tempfile.TemporaryDirectory(prefix="hub-ratelimit-") as tmp:
        twilio = start_fake()
        try:
            with sms_workers(Path(tmp), workers, rate, twilio) as broker_url:
                publisher = Celery("bench", broker=broker_url)
                for n in range(count):
                    data = {"phone": f"+1415555{n:04d}", "code": f"{n:06d}"}
                    publisher.send_task("hub.publish", kwargs={"type": "bench.sms", "data": data})
                expected_s = (count - 1) * limit.interval_ms / 1000
                requests = twilio.wait_for_requests(count, timeout_s=expected_s * 2 + 60)
        finally:
            twilio.stop()
    arrivals = [r.arrived_at for r in requests]
    return RateResult(
        workers=workers,
        rate=rate,
        count=count,
        received=len(requests),
        max_in_any_1s_window=max_in_window(arrivals),
        allowed_per_1s_window=1000 / limit.interval_ms + 1,
        first_to_last_s=max(arrivals) - min(arrivals),
        expected_s=expected_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", default="10/s")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    result = run(args.workers, args.rate, args.count)
    print(f"{result.workers} SMS worker processes, limit {result.rate}, {result.count} SMS")
    print(f"  received by the Twilio fake     {result.received}")
    print(
        f"  most in any 1-second window     {result.max_in_any_1s_window}"
        f"  (allowed: {result.allowed_per_1s_window:g} = rate + 1 burst)"
    )
    print(
        f"  first to last arrival           {result.first_to_last_s:.2f} s"
        f"  (limit implies {result.expected_s:.2f} s;"
        f" ratio {result.first_to_last_s / result.expected_s:.3f})"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        **asdict(result),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": stamp,
    }
    (out / f"ratelimit-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
