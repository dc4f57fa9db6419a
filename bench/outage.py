"""A long SMTP outage on the shipped settings: nothing failed, nothing doubled, drain time.

Run by hand: ``python -m bench.outage [--events 1000] [--outage-s 600]``.
It starts an embedded redis-server, a real SMTP server (aiosmtpd), one
``hub worker`` and ``hub beat`` on the bundled ``settings.toml`` (only the
SMTP address is set), publishes a fifth of the events, stops the SMTP server,
publishes the rest during the outage, brings SMTP back on the same port after
``--outage-s`` and waits until every email arrived. It prints how many
notifications failed, how many emails were duplicated and how long the
backlog took to drain after SMTP came back, and writes them under
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from celery import Celery
from sqlalchemy import create_engine, text

from bench.run import shipped_env
from hub.embedded import EmbeddedRedis
from hub.store.db import migrate
from tests.smtp_sink import start_sink


@dataclass(frozen=True)
class OutageResult:
    events: int
    outage_s: float
    delivered: int
    failed: int
    duplicated: int
    drained_after_s: float
    statuses: dict[str, int]


def run(events: int, outage_s: float, home: Path) -> OutageResult:
    redis_server = EmbeddedRedis(home / "redis")
    broker_url = redis_server.start()
    controller, sink = start_sink()
    port = controller.port
    database_url = f"sqlite:///{home / 'hub.db'}"
    migrate(database_url)
    env = shipped_env(home, broker_url, database_url, port)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "hub", command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(home / f"{command}.log").open("wb"),
        )
        for command in ("worker", "beat")
    ]
    recipients = [f"outage-{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(events)]
    try:
        with Celery(broker=broker_url) as celery:
            _wait(lambda: bool(celery.control.ping(timeout=0.5)), 60, "the worker")
            before = events // 5
            for to in recipients[:before]:
                _publish(celery, to)
            _wait(lambda: len(sink.messages) >= before // 2, 120, "the first emails")
            controller.stop()
            down_at = time.monotonic()
            print(f"[outage] SMTP down; publishing {events - before} events during the outage")
            for n, to in enumerate(recipients[before:]):
                _publish(celery, to)
                # Spread over the first half of the outage.
                time.sleep(max(0.0, (outage_s / 2) / (events - before) - 0.001) if n else 0)
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            controller = Controller(sink, hostname="127.0.0.1", port=port)
            controller.start()
            up_at = time.monotonic()
            print(f"[outage] SMTP back after {up_at - down_at:.0f} s; waiting for the backlog")
            _wait(lambda: len({m.recipient for m in sink.messages}) >= events, 3600, "the backlog")
            drained_after_s = time.monotonic() - up_at
            time.sleep(5)  # anything sent twice would arrive in these seconds too
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        controller.stop()
        redis_server.stop()
    counts: dict[str, int] = {}
    for message in sink.messages:
        counts[message.recipient] = counts.get(message.recipient, 0) + 1
    with create_engine(database_url).connect() as db:
        rows = db.execute(text("SELECT status, COUNT(*) FROM notifications GROUP BY status"))
        statuses = {status: count for status, count in rows}
    return OutageResult(
        events=events,
        outage_s=outage_s,
        delivered=len(counts),
        failed=statuses.get("failed", 0),
        duplicated=sum(count - 1 for count in counts.values()),
        drained_after_s=round(drained_after_s, 1),
        statuses=statuses,
    )


def _publish(celery: Celery, to: str) -> None:
    data = {"user_id": uuid.uuid4().hex[:8], "email": to, "name": "Ada"}
    celery.send_task("hub.publish", kwargs={"type": "user.registered", "data": data})


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--outage-s", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-outage-") as folder:
        result = run(args.events, args.outage_s, Path(folder))
    print(json.dumps(asdict(result), indent=2))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(__file__).parent / "results" / f"outage-{stamp}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"results: {target}")
    if result.failed or result.duplicated or result.delivered < result.events:
        sys.exit(1)


if __name__ == "__main__":
    main()
