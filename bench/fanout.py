"""One event to a topic of 10,000 recipients: time to the last email, rate, worker memory.

Run by hand: ``python -m bench.fanout [--recipients 10000]``. It starts an
embedded redis-server, a real SMTP server (aiosmtpd, in a process of its own:
:mod:`bench.sink`, as ``python -m bench`` uses), ``hub api`` and one ``hub
worker`` on the bundled ``settings.toml`` (only the SMTP address is set),
stores the recipients through ``PUT /v1/recipients:batch`` (1,000 per
request; the first request's time is reported), puts them in a topic, adds
a subscription without ``to`` and publishes one event naming the topic. It
reports the time from that publish to the last email received, emails per
second, and the worker's peak resident memory (its largest process, and all
of them together), sampled every 50 ms. Goals: under 10 s, under 250 MB.

Where the time went: when routing stamped the event routed (the insert of
its notifications, the commit and the enqueueing of their batches follow)
and when the first email arrived (seconds after the publish), and the CPU
seconds the worker (all its processes), the API and the SMTP sink used from
the publish to the last email; on a machine of few cores they compete for
the same CPUs.
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
from sqlalchemy import select

from bench.outage import _wait
from bench.run import shipped_env
from bench.sink import SinkProcess
from hub import keys
from hub.embedded import EmbeddedRedis, _free_port
from hub.store.db import migrate, session
from hub.store.models import Event
from tests.conftest import _healthy

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
    # Seconds after the publish: routing stamped the event routed (before it
    # inserted the notifications), the first email arrived.
    routed_after_s: float
    first_email_after_s: float
    # CPU seconds from the publish to the last email, by process (tree).
    cpu_s: dict[str, float]


class PeakMemory:
    """Samples a process tree's resident memory until stopped; keeps the peaks.

    The tree is listed again every second, not at each sample: listing walks
    every process of the machine, which cost the bench more CPU than sampling.
    """

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.largest = self.total = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        tree: list[psutil.Process] = []
        listed_at = 0.0
        while not self._done.wait(0.05):
            try:
                if time.monotonic() - listed_at > 1:
                    tree, listed_at = [self.root, *self.root.children(True)], time.monotonic()
                sizes = [p.memory_info().rss for p in tree]
            except psutil.Error:
                listed_at = 0.0
                continue
            self.largest = max(self.largest, *sizes)
            self.total = max(self.total, sum(sizes))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def cpu_seconds(root: psutil.Process) -> float:
    """User and system CPU seconds of a process and its living children."""
    total = 0.0
    for process in [root, *root.children(True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def run(count: int, home: Path) -> FanoutResult:
    redis_server = EmbeddedRedis(home / "redis")
    broker_url = redis_server.start()
    sink = SinkProcess().start()
    database_url = f"sqlite:///{home / 'hub.db'}"
    migrate(database_url)
    key = keys.create_key(database_url, "bench")
    api_port = _free_port()
    env = shipped_env(home, broker_url, database_url, sink.port)
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
    wanted = set(emails)
    measured = {
        "worker": psutil.Process(processes["worker"].pid),
        "api": psutil.Process(processes["api"].pid),
        "sink": psutil.Process(sink.pid),
    }
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
            memory = PeakMemory(measured["worker"])
            data = {"user_id": "u", "email": "signup@example.com", "name": "Ada", "run": run_id}
            cpu_before = {name: cpu_seconds(process) for name, process in measured.items()}
            published_at = time.time()
            published = http.post(
                "/v1/events",
                json={"type": "user.registered", "data": data, "topics": [f"fans-{run_id}"]},
            )
            assert published.status_code == 202, published.text
            # Counting is cheap; the records are fetched once they can be complete.
            _wait(lambda: sink.count >= count and wanted <= _received(sink), 600, "every email")
            cpu = {
                name: round(cpu_seconds(process) - cpu_before[name], 1)
                for name, process in measured.items()
            }
            memory.stop()
            time.sleep(2)  # anything sent twice would arrive in these seconds too
            arrivals, _ = sink.dump()
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(30)
        sink.stop()
        redis_server.stop()
    received = [a for a in arrivals if a.recipient in wanted]
    recipients = [a.recipient for a in received]
    # Each recipient's first email (the records are in arrival order), by the
    # sink's own clock (the same machine's), not the poll that saw it.
    first: dict[str, float] = {}
    for arrival in received:
        first.setdefault(arrival.recipient, arrival.arrived_at)
    elapsed = max(first.values()) - published_at
    return FanoutResult(
        recipients=count,
        upsert_1000_s=round(upsert_s, 3),
        publish_to_last_email_s=round(elapsed, 2),
        emails_per_s=round(count / elapsed, 1),
        duplicated=len(recipients) - len(set(recipients)),
        worker_peak_rss_mb=round(memory.largest / 2**20, 1),
        worker_peak_rss_all_mb=round(memory.total / 2**20, 1),
        routed_after_s=round(_routed_at(database_url, published.json()["id"]) - published_at, 2),
        first_email_after_s=round(min(first.values()) - published_at, 2),
        cpu_s=cpu,
    )


def _received(sink: SinkProcess) -> set[str]:
    arrivals, _ = sink.dump()
    return {a.recipient for a in arrivals}


def _routed_at(database_url: str, event_id: str) -> float:
    """When routing stamped ``event_id`` routed, as a Unix time."""
    with session(database_url) as db:
        routed_at = db.scalar(select(Event.routed_at).where(Event.id == event_id))
    assert routed_at is not None, f"event {event_id} was never routed"
    return routed_at.timestamp()


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
