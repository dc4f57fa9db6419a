"""What hub.integrations.celery costs a failing task in the host app, with the hub up and down.

Run by hand: ``python -m bench.integration [--failures 100000]``. In this
process, a Celery app's task (its request pushed as a worker would) "fails"
``--failures`` times: Celery's ``task_failure`` signal is sent as Celery
sends it, with a real exception, its traceback (6 frames deep) and arguments
holding secrets. Each send is timed:

- baseline: no integration installed (the signal has no receiver);
- hub up: the integration posting to a stand-in hub, a separate process
  that answers every ``POST /v1/events:batch`` with 202 as the hub does;
- hub down: the integration pointed at a closed port.

For scale, it also times 5,000 eager runs (``task.apply()``) of a task that
fails, without the integration and with it (hub down): what a failure costs
Celery itself, logging aside.

It prints the median and p99 of each in microseconds, the integration's
counts (sent, dropped), and the process's resident memory every 10,000
failures of the hub-down run: the queue is bounded, so memory must stay flat. The same
figures go to ``bench/results/integration-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from billiard.einfo import ExceptionInfo
from celery import Celery
from celery.signals import task_failure

from hub.integrations.celery import install
from tests.smtp_sink import _free_port

APPLIES = 5_000

STAND_IN = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["events"]
        results = [{"index": i, "status": "accepted", "id": f"evt_{i}"} for i in range(len(events))]
        body = json.dumps({"accepted": len(events), "rejected": 0, "results": results}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hub).serve_forever()
"""


class CardDeclined(Exception):
    """What the billing task raises."""


def _charge(customer: dict[str, Any], amount: int, depth: int = 5) -> None:
    if depth:
        _charge(customer, amount, depth - 1)
        return
    raise CardDeclined(f"card of customer {customer['id']} declined for {amount} (code 51)")


def _failure() -> tuple[CardDeclined, ExceptionInfo]:
    try:
        _charge({"id": "c42"}, 4200)
    except CardDeclined as exc:
        return exc, ExceptionInfo()
    raise AssertionError("unreachable")


def time_failures(task: Any, task_ids: list[str], rss_mb: list[float]) -> array[float]:
    """Microseconds of each ``task_failure`` send, as Celery's tracer sends it.

    The process's resident memory is appended to ``rss_mb`` every 10,000 failures.
    """
    exception, einfo = _failure()
    args = ({"id": "c42", "card": {"token": "tok_4242", "last4": "4242"}}, 4200)
    kwargs = {"password": "hunter2", "currency": "EUR", "note": "x" * 200}
    # Floats in an array, not objects in a list: the memory samples see the integration alone.
    timings = array("d", bytes(8 * len(task_ids)))
    clock = time.perf_counter_ns
    me = psutil.Process()
    for n, task_id in enumerate(task_ids):
        if n % 10_000 == 0:
            rss_mb.append(round(me.memory_info().rss / 2**20, 1))
        task.push_request(
            id=task_id, retries=0, hostname="billing@host", delivery_info={"routing_key": "billing"}
        )
        started = clock()
        task_failure.send(
            sender=task,
            task_id=task_id,
            exception=exception,
            args=args,
            kwargs=kwargs,
            traceback=exception.__traceback__,
            einfo=einfo,
        )
        timings[n] = (clock() - started) / 1000
        task.pop_request()
    return timings


def time_applies(task: Any, count: int) -> list[float]:
    """Microseconds of ``count`` eager runs of a failing task: Celery's own cost of a failure."""
    timings = []
    for _ in range(count):
        started = time.perf_counter_ns()
        task.apply(args=({"id": "c42", "token": "tok_4242"}, 4200), kwargs={"password": "x"})
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def summary(timings: Sequence[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99)], 2),
    }


@contextmanager
def stand_in_hub() -> Iterator[str]:
    """A separate process answering batches as the hub does: the sender's work is real."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", STAND_IN, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", type=int, default=100_000)
    args = parser.parse_args()
    app = Celery("billing", broker="memory://")

    @app.task(name="billing.charge")
    def charge(customer: dict[str, Any], amount: int, password: str) -> None:
        """Fails like the simulated ones, for the eager runs."""
        _charge(customer, amount)

    # The task itself, as Celery's tracer sends it (app.task returns a lazy proxy).
    task = app.tasks["billing.charge"]
    task_ids = [str(uuid.uuid4()) for _ in range(args.failures)]
    results: dict[str, Any] = {"failures": args.failures}
    results["baseline"] = summary(time_failures(task, task_ids, []))
    # Celery logs each failure with its traceback; here only its cost matters.
    logging.getLogger("celery.app.trace").setLevel(logging.CRITICAL)
    results["apply_baseline"] = summary(time_applies(task, APPLIES))

    with stand_in_hub() as url:
        integration = install(app, url=url, api_key="hub_bench", service="billing")
        results["hub_up"] = summary(time_failures(task, task_ids, []))
        integration.close()
        results["hub_up"] |= {"sent": integration.sent, "dropped": integration.dropped}

    rss_mb: list[float] = []
    integration = install(app, url=f"http://127.0.0.1:{_free_port()}", api_key="k", service="b")
    results["hub_down"] = summary(time_failures(task, task_ids, rss_mb))
    rss_mb.append(round(psutil.Process().memory_info().rss / 2**20, 1))
    results["apply_hub_down"] = summary(time_applies(task, APPLIES))
    integration.close()
    results["hub_down"] |= {
        "sent": integration.sent,
        "dropped": integration.dropped,
        "rss_mb_every_10000": rss_mb,
    }

    print(f"{args.failures:,} task_failure signals each ({APPLIES:,} for apply_*), microseconds")
    for name in ("baseline", "hub_up", "hub_down", "apply_baseline", "apply_hub_down"):
        row = results[name]
        extra = {k: v for k, v in row.items() if not k.endswith("_us")} or ""
        print(f"  {name:14} median {row['median_us']:7.2f}  p99 {row['p99_us']:7.2f}  {extra}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = Path(__file__).parent / "results" / f"integration-{stamp}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2))
    print(f"results: {target}")


if __name__ == "__main__":
    main()
