"""`hub up` start-up time and publish -> sent latency of single events, on a fresh var dir.

Run by hand: ``python -m bench.startup_latency [--events 20]``. It starts
``hub up`` (embedded Redis, worker, beat, API; email to the outbox) in a
temporary folder, times until it reports ready, then publishes events one at a
time and reads each one's publish -> sent time from the store's own
timestamps (event created_at, notification sent_at).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_sent(http: httpx.Client, event_id: str, timeout_s: float = 30) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        event = http.get(f"/v1/events/{event_id}").json()
        notes = event["notifications"]
        if notes and all(n["status"] == "sent" for n in notes):
            created = datetime.fromisoformat(event["created_at"])
            sent = max(datetime.fromisoformat(n["sent_at"]) for n in notes)
            return (sent - created).total_seconds() * 1000
        time.sleep(0.005)
    raise TimeoutError(f"event {event_id} not sent within {timeout_s}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "hub", "up", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "hub is up" in line:
                break
        ready_s = time.monotonic() - started
        base = f"http://127.0.0.1:{port}"
        key = (home / "var" / "dev-api-key").read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            latencies = []
            for n in range(args.events + 1):
                data = {"user_id": str(n), "email": f"u{n}@example.com", "name": f"User {n}"}
                published = http.post("/v1/events", json={"type": "user.registered", "data": data})
                latency = _wait_sent(http, published.json()["id"])
                if n == 0:
                    first_s = time.monotonic() - started
                    first_latency = latency
                else:
                    latencies.append(latency)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    print(f"hub up -> 'hub is up' (API and worker): {ready_s:6.2f} s")
    print(f"hub up -> first event sent:             {first_s:6.2f} s ({first_latency:.0f} ms)")
    print(f"publish -> sent, {len(latencies)} events one at a time:")
    print(f"  median {statistics.median(latencies):6.1f} ms")
    print(f"  p95    {statistics.quantiles(latencies, n=20)[-1]:6.1f} ms")
    print(f"  min/max {min(latencies):.1f} / {max(latencies):.1f} ms")
    print(f"machine: {os.cpu_count()} cores; data in {home}")


if __name__ == "__main__":
    main()
