"""HTTP load for the bench: ``wrk`` at maximum rate, a Python fallback, and a paced publisher.

Every generator publishes ``user.registered`` events whose recipients are unique
and predictable (:func:`recipients`), so the bench can check that each one's
email arrived exactly once.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LUA = Path(__file__).parent / "wrk" / "publish.lua"
_SUMMARY = re.compile(r"^BENCH accepted=(\d+) answered=(\d+) .*p50_us=(\d+) p99_us=(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: (.*)")


def recipient(prefix: str, thread: int, n: int) -> str:
    """The address the Lua script and the Python generators use for event ``n`` of a thread."""
    return f"{prefix}-{thread}-{n}@bench.example"


def recipients(prefix: str, total: int, threads: int) -> set[str]:
    """Every recipient of a max-rate run: thread i (1..threads) sends its share of ``total``."""
    shares = [total // threads + (1 if i <= total % threads else 0) for i in range(1, threads + 1)]
    return {
        recipient(prefix, i, n) for i, share in enumerate(shares, 1) for n in range(1, share + 1)
    }


def event_body(prefix: str, thread: int, n: int) -> dict[str, object]:
    user = f"{thread}-{n}"
    data = {"user_id": user, "email": recipient(prefix, thread, n), "name": f"User {user}"}
    return {"type": "user.registered", "data": data}


@dataclass
class MaxRate:
    """One maximum-rate run: ``total`` publishes as fast as the generator can send them."""

    generator: str
    total: int
    accepted: int
    answered: int
    started_at: float  # wall clock, just before the first request
    elapsed_s: float  # until the last publish was answered
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    errors: str = ""

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0


def wrk_version() -> str | None:
    """wrk's version line, or None when wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    probe = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (probe.stdout or probe.stderr).splitlines()[0].strip()


def max_rate(
    base_url: str,
    key: str,
    prefix: str,
    total: int,
    threads: int,
    connections: int,
    timeout_s: float,
) -> MaxRate:
    """Publish ``total`` events at maximum rate with wrk, else with the Python generator."""
    if shutil.which("wrk") is None:
        return asyncio.run(_python_max_rate(base_url, key, prefix, total, connections))
    return _wrk_max_rate(base_url, key, prefix, total, threads, connections, timeout_s)


def _wrk_max_rate(
    base_url: str,
    key: str,
    prefix: str,
    total: int,
    threads: int,
    connections: int,
    timeout_s: float,
) -> MaxRate:
    connections = max(connections, threads)
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(timeout_s)}s"]
    argv += ["--timeout", "30s", "-s", str(LUA), base_url, "--"]
    argv += [str(total), key, prefix, str(threads)]
    started = time.time()
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wrk.stdout is not None
    done, finished = 0, started
    lines = []
    for line in wrk.stdout:
        lines.append(line)
        if line.startswith("BENCH thread "):
            done += 1
            if done == threads:
                # Every publish has its answer; wrk would otherwise sleep out -d.
                finished = time.time()
                wrk.send_signal(signal.SIGINT)
    wrk.wait()
    if done < threads:
        finished = time.time()  # timed out or failed: wrk ran for all of -d
    output = "".join(lines)
    summary = next((m for m in map(_SUMMARY.match, lines) if m), None)
    if summary is None:
        raise RuntimeError(f"wrk printed no BENCH summary:\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    return MaxRate(
        generator="wrk",
        total=total,
        accepted=int(summary.group(1)),
        answered=int(summary.group(2)),
        started_at=started,
        elapsed_s=finished - started,
        latency_p50_ms=int(summary.group(3)) / 1000,
        latency_p99_ms=int(summary.group(4)) / 1000,
        errors=errors.group(1) if errors else "",
    )


async def _python_max_rate(
    base_url: str, key: str, prefix: str, total: int, connections: int
) -> MaxRate:
    """``connections`` closed-loop senders sharing ``total`` publishes (recipients as thread 1)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {key}"}
    numbers = iter(range(1, total + 1))
    statuses: list[int] = []
    latencies: list[float] = []

    async def sender(client: httpx.AsyncClient) -> None:
        for n in numbers:
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/events", json=event_body(prefix, 1, n))
                statuses.append(response.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            latencies.append(time.perf_counter() - sent)

    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as client:
        started = time.time()
        await asyncio.gather(*(sender(client) for _ in range(connections)))
        elapsed = time.time() - started
    latencies.sort()
    return MaxRate(
        generator="python (asyncio + httpx)",
        total=total,
        accepted=statuses.count(202),
        answered=sum(1 for s in statuses if s),
        started_at=started,
        elapsed_s=elapsed,
        latency_p50_ms=percentile(latencies, 50) * 1000,
        latency_p99_ms=percentile(latencies, 99) * 1000,
        errors=f"{statuses.count(0)} failed requests" if 0 in statuses else "",
    )


@dataclass
class Paced:
    """An open-loop run at a fixed offered rate; ``sent_at`` is each recipient's due time."""

    rate: float
    total: int
    sent_at: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    elapsed_s: float = 0.0
    max_lag_ms: float = 0.0


async def paced(base_url: str, key: str, prefix: str, total: int, rate: float) -> Paced:
    """Publish ``total`` events at ``rate`` per second, never waiting for an answer to send.

    A publish is due at ``start + i / rate`` and recorded at its due time, so a
    late publisher counts against the latency rather than hiding it.
    """
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    headers = {"Authorization": f"Bearer {key}"}
    result = Paced(rate=rate, total=total)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as client:

        async def publish(n: int) -> bool:
            body = json.dumps(event_body(prefix, 1, n))
            try:
                response = await client.post(
                    "/v1/events", content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 202

        # Open connections first, so the run measures the hub, not TCP set-up.
        await asyncio.gather(*(client.get("/healthz") for _ in range(32)))
        start = time.time() + 0.05
        tasks = []
        for n in range(1, total + 1):
            due = start + (n - 1) / rate
            if (wait_s := due - time.time()) > 0:
                await asyncio.sleep(wait_s)
            result.max_lag_ms = max(result.max_lag_ms, (time.time() - due) * 1000)
            result.sent_at[recipient(prefix, 1, n)] = due
            tasks.append(asyncio.create_task(publish(n)))
        answers = await asyncio.gather(*tasks)
        result.elapsed_s = time.time() - start
    result.accepted = sum(answers)
    return result


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
