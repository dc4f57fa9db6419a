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
from urllib.parse import urlsplit

LUA = Path(__file__).parent / "wrk" / "publish.lua"
PYTHON_GENERATOR = "python (asyncio, raw HTTP/1.1)"
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


class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs prepared bytes and reads the status.

    A few lines of asyncio streams instead of httpx, whose client cost ~4 ms of
    CPU per request here: on a 2-core machine the load generator must not take
    the CPU the hub is being measured with.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, raw: bytes) -> int:
        """Send one request; its status, or 0 when the connection failed (reopened next time)."""
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            writer.write(raw)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            return status
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            await self.close()
            return 0

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Publisher:
    """Prepared ``POST /v1/events`` requests over ``connections`` raw keep-alive connections."""

    def __init__(self, base_url: str, key: str, connections: int) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.key = key
        self.connections = [RawHttp(self.host, self.port) for _ in range(connections)]

    def publish_bytes(self, prefix: str, thread: int, n: int) -> bytes:
        body = json.dumps(event_body(prefix, thread, n)).encode()
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def open(self) -> None:
        health = f"GET /healthz HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        await asyncio.gather(*(c.request(health) for c in self.connections))

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


async def _python_max_rate(
    base_url: str, key: str, prefix: str, total: int, connections: int
) -> MaxRate:
    """``connections`` closed-loop senders sharing ``total`` publishes (recipients as thread 1)."""
    publisher = Publisher(base_url, key, connections)
    await publisher.open()
    numbers = iter(range(1, total + 1))
    statuses: list[int] = []
    latencies: list[float] = []

    async def sender(connection: RawHttp) -> None:
        for n in numbers:
            raw = publisher.publish_bytes(prefix, 1, n)
            sent = time.perf_counter()
            statuses.append(await connection.request(raw))
            latencies.append(time.perf_counter() - sent)

    started = time.time()
    await asyncio.gather(*(sender(c) for c in publisher.connections))
    elapsed = time.time() - started
    await publisher.close()
    latencies.sort()
    return MaxRate(
        generator=PYTHON_GENERATOR,
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
    # How late the publisher itself was to hand a publish over (its own CPU), and
    # how long publishes then waited for a free connection (every one awaiting the hub).
    scheduler_lag_p99_ms: float = 0.0
    connection_wait_p99_ms: float = 0.0


async def paced(
    base_url: str, key: str, prefix: str, total: int, rate: float, connections: int = 64
) -> Paced:
    """Publish ``total`` events at ``rate`` per second, never waiting for an answer to send.

    A publish is due at ``start + i / rate`` and its latency counts from then, so
    a late publisher, or one waiting for a free connection, counts against the
    latency rather than hiding it (no coordinated omission).
    """
    publisher = Publisher(base_url, key, connections)
    await publisher.open()
    result = Paced(rate=rate, total=total)
    due_queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    scheduler_lag: list[float] = []
    connection_wait: list[float] = []
    accepted = 0

    async def sender(connection: RawHttp) -> None:
        nonlocal accepted
        while (item := await due_queue.get()) is not None:
            n, due = item
            raw = publisher.publish_bytes(prefix, 1, n)
            connection_wait.append(time.time() - due)
            # Awaited first: `accepted += await ...` would read `accepted` before
            # suspending and lose the other senders' counts.
            status = await connection.request(raw)
            accepted += status == 202

    senders = [asyncio.create_task(sender(c)) for c in publisher.connections]
    start = time.time() + 0.05
    for n in range(1, total + 1):
        due = start + (n - 1) / rate
        if (wait_s := due - time.time()) > 0:
            await asyncio.sleep(wait_s)
        scheduler_lag.append(time.time() - due)
        result.sent_at[recipient(prefix, 1, n)] = due
        due_queue.put_nowait((n, due))
    for _ in senders:
        due_queue.put_nowait(None)
    await asyncio.gather(*senders)
    result.elapsed_s = time.time() - start
    await publisher.close()
    result.accepted = accepted
    result.scheduler_lag_p99_ms = percentile(sorted(scheduler_lag), 99) * 1000
    result.connection_wait_p99_ms = percentile(sorted(connection_wait), 99) * 1000
    return result


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
