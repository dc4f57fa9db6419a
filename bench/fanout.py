"""One event to a topic of 10,000 recipients: time to the last email, rate, worker memory.

Run by hand: ``python -m bench.fanout [--recipients 10000]``. It starts an
embedded redis-server, a real SMTP server (aiosmtpd), ``hub api`` and one
``hub worker`` on the bundled ``settings.toml`` (only the SMTP address is
set), stores the recipients through ``PUT /v1/recipients:batch`` (1,000 per
request; the first request's time is reported), puts them in a topic, adds
a subscription without ``to`` and publishes one event naming the topic. It
reports the time from that publish to the last email received, emails per
second, and the worker's peak resident memory (its largest process, and all
of them together), sampled every 50 ms. Goals: under 10 s, under 250 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from celery import Celery

from bench.outage import _wait
from bench.run import shipped_env
from hub import keys
from hub.embedded import EmbeddedRedis
from hub.store.db import migrate
from tests.conftest import _healthy
from tests.smtp_sink import _free_port, start_sink

CHUNK = 1000


@dataclass(frozen=True)
class FanoutResult:
    recipients: int
    upsert_1000_s: float
    publish_to_last_email_s: float
    emails_per_s: float
    duplicated: int
    worker_peak_rss_mb: float
    worker_peak_rss_all_mb: float


class PeakMemory:
    """Samples a process tree's resident memory until stopped; keeps the peaks."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.largest = self.total = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            try:
                sizes = [p.memory_info().rss for p in [self.root, *self.root.children(True)]]
            except psutil.Error:
                continue
            self.largest = max(self.largest, *sizes)
            self.total = max(self.total, sum(sizes))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run(count: int, home: Path) -> FanoutResult:
    redis_server = EmbeddedRedis(home / "redis")
    broker_url = redis_server.start()
    controller, sink = start_sink()
    database_url = f"sqlite:///{home / 'hub.db'}"
    migrate(database_url)
    key = keys.create_key(database_url, "bench")
    api_port = _free_port()
    env = shipped_env(home, broker_url, database_url, controller.port)
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(home / f"{name}.log").open("wb"),
        )
        for name, args in (("worker", ["worker"]), ("api", ["api", "--port", str(api_port)]))
    }
    base = f"http://127.0.0.1:{api_port}"
    run_id = uuid.uuid4().hex[:8]
    emails = [f"fan-{n}-{run_id}@example.com" for n in range(count)]
    try:
        with Celery(broker=broker_url) as celery:
            _wait(lambda: bool(celery.control.ping(timeout=0.5)), 60, "the worker")
        _wait(lambda: _healthy(base), 30, "the API")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as http:
            upsert_s = _store_topic(http, emails, f"fans-{run_id}")
            subscription = {
                "name": f"fans-{run_id}",
                "event": "user.registered",
                "channel": "email",
                "template": "user.registered",
                "filter": {"data.run": {"eq": run_id}},
            }
            assert http.post("/v1/subscriptions", json=subscription).status_code == 201
            memory = PeakMemory(psutil.Process(processes["worker"].pid))
            data = {"user_id": "u", "email": "signup@example.com", "name": "Ada", "run": run_id}
            started = time.monotonic()
            published = http.post(
                "/v1/events",
                json={"type": "user.registered", "data": data, "topics": [f"fans-{run_id}"]},
            )
            assert published.status_code == 202, published.text
            wanted = set(emails)
            _wait(lambda: wanted <= {m.recipient for m in sink.messages}, 600, "every email")
            elapsed = time.monotonic() - started
            memory.stop()
            time.sleep(2)  # anything sent twice would arrive in these seconds too
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(30)
        controller.stop()
        redis_server.stop()
    received = [m.recipient for m in sink.messages if m.recipient in set(emails)]
    return FanoutResult(
        recipients=count,
        upsert_1000_s=round(upsert_s, 3),
        publish_to_last_email_s=round(elapsed, 2),
        emails_per_s=round(count / elapsed, 1),
        duplicated=len(received) - len(set(received)),
        worker_peak_rss_mb=round(memory.largest / 2**20, 1),
        worker_peak_rss_all_mb=round(memory.total / 2**20, 1),
    )


def _store_topic(http: httpx.Client, emails: list[str], topic: str) -> float:
    """Store a recipient per address and put them all in ``topic``; the first batch's time."""
    first_s = 0.0
    for start in range(0, len(emails), CHUNK):
        chunk = [
            {"id": f"r-{n}", "email": email}
            for n, email in enumerate(emails[start : start + CHUNK], start)
        ]
        began = time.monotonic()
        assert http.put("/v1/recipients:batch", json={"recipients": chunk}).status_code == 200
        first_s = first_s or time.monotonic() - began
        ids = [item["id"] for item in chunk]
        added = http.put(f"/v1/topics/{topic}/recipients", json={"recipients": ids})
        assert added.status_code == 200, added.text
    return first_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-fanout-") as folder:
        result = run(args.recipients, Path(folder))
    print(json.dumps(asdict(result), indent=2))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(__file__).parent / "results" / f"fanout-{stamp}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"results: {target}")
    if result.duplicated:
        sys.exit(1)


if __name__ == "__main__":
    main()
