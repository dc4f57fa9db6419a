"""Throughput, latency and memory of the hub against its limits and a seed-style baseline.

Run: ``python -m bench [--quick] [--n N] [--concurrency K] [--pool-size P] ...``.
It starts everything itself (an embedded redis-server, one aiosmtpd sink in its
own process, Celery workers, the hub's API) and runs, one phase at a time with
the previous phase's processes stopped and Redis flushed:

- **A** raw aiosmtplib: N ready-made welcome emails over C persistent
  connections (C = worker processes x ``channels.email.pool_size``), from as
  many sender processes as the hub has worker processes: the SMTP limit.
- **B** the seed-style baseline (:mod:`bench.baseline`): one Celery task per
  email, plain Jinja rendering, a new SMTP connection per email.
- **C** bare Celery: a no-op task, the same worker flags.
- **bare** a FastAPI app that only answers 202 (:mod:`bench.bare_api`).
- **H** the hub: ``hub api`` and ``hub worker -Q celery,events,email``, a fresh
  SQLite store; N events paced at 200/s for publish -> SMTP latency, then N at
  maximum rate (wrk) for accepted events/s and delivered emails/s; the peak RSS
  of every worker process throughout. ``--completion`` turns completion on for
  its event type (``user.registered``), to weigh what it costs.

It prints one table with the targets (reported, never asserted) and writes it
as JSON under ``bench/results/``. It exits non-zero when an email of B or H was
lost or duplicated, or a phase did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery

from bench import baseline, load
from bench.raw_smtp import sender
from bench.report import (
    Config,
    HubResult,
    Latency,
    Report,
    Throughput,
    check_exactly_once,
    git_state,
    print_table,
    write_json,
)
from bench.sink import Arrival, SinkProcess
from hub.embedded import EmbeddedRedis, _free_port
from hub.settings import bundled_path

REPO = Path(__file__).resolve().parent.parent
HUB_QUEUES = "celery,events,email"


# ---------------------------------------------------------------- processes


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A child in its own session (so its whole group can be killed), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(processes: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL to the group of what is left."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with suppress(ProcessLookupError):  # prefork children a killed main process left
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def running(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield processes
    finally:
        stop(processes)


def died(processes: list[subprocess.Popen[bytes]]) -> Callable[[], str | None]:
    """A stall check for waits: names a process that exited."""

    def check() -> str | None:
        gone = [p.args for p in processes if p.poll() is not None]
        return f"exited: {gone[0]}" if gone else None

    return check


def wait_workers(broker_url: str, count: int, timeout_s: float = 60) -> None:
    with Celery(broker=broker_url) as probe:
        deadline = time.monotonic() + timeout_s
        while len(probe.control.ping(timeout=0.5)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Celery workers did not answer within {timeout_s}s")


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


class CpuMeter:
    """CPU time the rest of the machine used: all busy time minus this process tree's.

    This process's own time includes every child it has waited for (and theirs),
    so measured after every phase stopped its processes, the difference is load
    from outside the bench, which disturbs the numbers.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy, self.ours = self._busy(), self._ours()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    @staticmethod
    def _ours() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def foreign(self) -> tuple[float, float]:
        """(CPU seconds used by other processes, wall seconds) since construction."""
        busy, ours = self._busy() - self.busy, self._ours() - self.ours
        return max(busy - ours, 0.0), time.monotonic() - self.started


class RssSampler:
    """Peak RSS of processes and all their children, sampled every ``interval_s``."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.2) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for label, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in family:
                try:
                    rss_mb = process.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
                name = label if process.pid == pid else f"{label} child {process.pid}"
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss_mb)


# ---------------------------------------------------------------- phases


def nth_arrival(arrivals: list[Arrival], n: int) -> float | None:
    times = sorted(a.arrived_at for a in arrivals)
    return times[n - 1] if len(times) >= n else None


def settle(sink: SinkProcess) -> tuple[list[Arrival], int]:
    """The sink's records after a short grace, so a late duplicate is counted too."""
    time.sleep(1.0)
    return sink.dump()


def phase_a(cfg: Config, sink: SinkProcess) -> Throughput:
    """Raw aiosmtplib: ready-made messages over C persistent connections."""
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    go = context.Event()
    shares = [cfg.n // cfg.processes + (i < cfg.n % cfg.processes) for i in range(cfg.processes)]
    firsts = [sum(shares[:i]) for i in range(cfg.processes)]
    senders = [
        context.Process(target=sender, args=(sink.port, cfg.pool_size, first, share, ready, go))
        for first, share in zip(firsts, shares, strict=True)
    ]
    for process in senders:
        process.start()
    try:
        sizes = [ready.get(timeout=120) for _ in senders]
        started = time.time()
        go.set()
        sink.wait_for(cfg.n, cfg.timeout_s)
        for process in senders:
            process.join(30)
    finally:
        for process in senders:
            if process.is_alive():
                process.kill()
    arrivals, sessions = settle(sink)
    done = nth_arrival(arrivals, cfg.n)
    expected = {f"a-{n}@bench.example" for n in range(cfg.n)}
    return Throughput(
        what=f"raw aiosmtplib, {cfg.smtp_connections} persistent connections",
        n=cfg.n,
        elapsed_s=done - started if done else None,
        completed=len(arrivals),
        smtp_sessions=sessions,
        check=check_exactly_once(arrivals, expected),
        note=f"message {max(sizes)} bytes",
    )


def baseline_workers(
    cfg: Config, broker_url: str, sink: SinkProcess, home: Path, name: str
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BENCH_BROKER_URL": broker_url,
        "BENCH_SMTP_PORT": str(sink.port),
    }
    argv = [sys.executable, "-m", "celery", "-A", "bench.baseline", "worker"]
    argv += ["-Q", baseline.QUEUE, "--concurrency", str(cfg.concurrency), *baseline.WORKER_FLAGS]
    return [
        start([*argv, "-n", f"{name}{i}@%h"], env, home / f"{name}-worker-{i}.log", REPO)
        for i in range(cfg.workers)
    ]


def welcome_args(prefix: str, n: int) -> list[Any]:
    data = {"user_id": str(n), "email": f"{prefix}-{n}@bench.example", "name": f"User {n}"}
    return [f"evt_{prefix}{n:024x}"[:32], data]


def phase_b(cfg: Config, broker_url: str, sink: SinkProcess, home: Path) -> Throughput:
    """The seed-style baseline: a task per email, a new SMTP connection per email."""
    workers = baseline_workers(cfg, broker_url, sink, home, "baseline")
    with running(workers), Celery(broker=broker_url) as client:
        wait_workers(broker_url, cfg.workers)
        warm = 4 * cfg.processes
        for n in range(warm):
            client.send_task("bench.welcome", args=welcome_args("warm", n), queue=baseline.QUEUE)
        sink.wait_for(warm, cfg.timeout_s, died(workers))
        sink.reset()
        started = time.time()
        with client.producer_or_acquire() as producer:
            for n in range(cfg.n):
                args = welcome_args("b", n)
                client.send_task(
                    "bench.welcome", args=args, queue=baseline.QUEUE, producer=producer
                )
        sent_s = time.time() - started
        sink.wait_for(cfg.n, cfg.timeout_s, died(workers))
        arrivals, sessions = settle(sink)
    done = nth_arrival(arrivals, cfg.n)
    expected = {f"b-{n}@bench.example" for n in range(cfg.n)}
    return Throughput(
        what="seed-style Celery, new SMTP connection per email",
        n=cfg.n,
        elapsed_s=done - started if done else None,
        completed=len(arrivals),
        smtp_sessions=sessions,
        check=check_exactly_once(arrivals, expected),
        note=f"sending took {sent_s:.2f} s of it, message {_baseline_size()} bytes",
    )


def _baseline_size() -> int:
    from email import policy

    email = baseline.build_welcome(*welcome_args("b", 0))
    return len(email.as_bytes(policy=policy.SMTP))


def _run_noops(
    client: Celery, store: redis.Redis, total: int, timeout_s: float
) -> tuple[float, float | None]:
    """Send ``total`` no-op tasks: seconds spent sending, and when the last one finished."""
    store.delete(baseline.NOOP_COUNT_KEY, baseline.NOOP_DONE_KEY)
    started = time.time()
    with client.producer_or_acquire() as producer:
        for _ in range(total):
            client.send_task("bench.noop", args=[total], queue=baseline.QUEUE, producer=producer)
    sent_s = time.time() - started
    deadline = time.monotonic() + timeout_s
    while (done := store.get(baseline.NOOP_DONE_KEY)) is None:
        if time.monotonic() > deadline:
            return sent_s, None
        time.sleep(0.005)
    return sent_s, float(done)


def phase_c(cfg: Config, broker_url: str, sink: SinkProcess, home: Path) -> Throughput:
    """Bare Celery: no-op tasks, timed from the first send to the last completion."""
    workers = baseline_workers(cfg, broker_url, sink, home, "noop")
    store = redis.Redis.from_url(broker_url)
    with running(workers), Celery(broker=broker_url) as client:
        wait_workers(broker_url, cfg.workers)
        _run_noops(client, store, 4 * cfg.processes, cfg.timeout_s)
        started = time.time()
        sent_s, done = _run_noops(client, store, cfg.n, cfg.timeout_s)
        completed = int(store.get(baseline.NOOP_COUNT_KEY) or 0)
    return Throughput(
        what="bare Celery, no-op task",
        n=cfg.n,
        elapsed_s=done - started if done else None,
        completed=completed,
        note=f"sending took {sent_s:.2f} s of it",
    )


def phase_bare(cfg: Config, home: Path) -> load.MaxRate:
    """The publish rate of a FastAPI endpoint that does nothing but answer 202."""
    port = _free_port()
    argv = [sys.executable, "-m", "bench.bare_api", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = f"http://127.0.0.1:{port}"
    with running([start(argv, env, home / "bare-api.log", REPO)]):
        wait_http(f"{base}/healthz")
        return load.max_rate(
            base, "none", "bare", cfg.n, cfg.wrk_threads, cfg.wrk_connections, cfg.timeout_s
        )


def shipped_env(home: Path, broker_url: str, database_url: str, smtp_port: int) -> dict[str, str]:
    """A hub process's environment: the bundled settings, with only these addresses set."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_SETTINGS": str(bundled_path("settings.toml")),
        "HUB_BROKER_URL": broker_url,
        "HUB_DATABASE_URL": database_url,
        "HUB_VAR_DIR": str(home / "var"),
        "HUB_CHANNELS__EMAIL__HOST": "127.0.0.1",
        "HUB_CHANNELS__EMAIL__PORT": str(smtp_port),
    }


def hub_env(
    cfg: Config, home: Path, broker_url: str, database_url: str, smtp_port: int
) -> dict[str, str]:
    pool = {"HUB_CHANNELS__EMAIL__POOL_SIZE": str(cfg.pool_size)}
    if cfg.no_metrics:
        pool["HUB_WORKER__METRICS"] = "false"
    return {**shipped_env(home, broker_url, database_url, smtp_port), **pool}


def fresh_database(server_url: str) -> str:
    """Create an empty database on a PostgreSQL server for this run; its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"hub_bench_{int(time.time())}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def phase_h(cfg: Config, broker_url: str, sink: SinkProcess, home: Path) -> HubResult:
    """The hub end to end: paced latency run, then a max-rate run; RSS throughout."""
    from hub.keys import create_key
    from hub.store.db import migrate

    home.mkdir()
    database_url = (
        fresh_database(cfg.database_server)
        if cfg.database_server
        else f"sqlite:///{home / 'hub.db'}"
    )
    migrate(database_url)
    key = create_key(database_url, "bench")
    env = hub_env(cfg, home, broker_url, database_url, sink.port)
    if cfg.completion:
        env["HUB_SETTINGS"] = str(_completion_settings(home))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    worker_argv = [sys.executable, "-m", "hub", "worker", "-Q", HUB_QUEUES]
    worker_argv += ["--concurrency", str(cfg.concurrency)]
    workers = [start(worker_argv, env, home / f"worker-{i}.log", home) for i in range(cfg.workers)]
    api = start(
        [sys.executable, "-m", "hub", "api", "--port", str(port)], env, home / "api.log", home
    )
    roots = {f"worker {i}": w.pid for i, w in enumerate(workers)} | {"api": api.pid}
    result = HubResult()
    with running([api, *workers]), RssSampler(roots) as rss:
        wait_http(f"{base}/healthz")
        wait_workers(broker_url, cfg.workers)
        stalled = died([api, *workers])
        warm = _hub_warm_up(cfg, base, key, sink, stalled)
        result.latency = _hub_latency(cfg, base, key, sink, stalled)
        result.max_rate, result.delivered = _hub_max_rate(cfg, base, key, sink, stalled)
        if cfg.completion:
            expected = warm + result.latency.accepted + result.max_rate.accepted
            result.completion_expected = expected
            result.completed_events, result.completion_announced = _hub_completion(
                database_url, expected, cfg.timeout_s
            )
        result.batch_rate = _hub_batch_rate(cfg, base, key)
    result.worker_peak_rss_mb = {k: v for k, v in rss.peaks.items() if k.startswith("worker")}
    result.api_peak_rss_mb = max(v for k, v in rss.peaks.items() if k.startswith("api"))
    return result


def _completion_settings(home: Path) -> Path:
    """The bundled settings with completion on for user.registered, written in ``home``."""
    bundled = bundled_path("settings.toml").read_text()
    off = "completion = false\n"
    if bundled.count(off) != 1:
        raise RuntimeError("the bundled settings hold no single `completion = false` to turn on")
    path = home / "settings-completion.toml"
    path.write_text(bundled.replace(off, "completion = true\n"))
    return path


def _hub_completion(database_url: str, events: int, timeout_s: float) -> tuple[int, int]:
    """(events completed, event.completed events stored) once ``events`` are, or at timeout."""
    from sqlalchemy import func, select

    from hub.store.db import session
    from hub.store.models import Event, EventStatus

    def counted() -> tuple[int, int]:
        with session(database_url) as db:
            done = select(func.count()).where(Event.status == EventStatus.COMPLETED)
            announced = select(func.count()).where(Event.type == "event.completed")
            return db.scalar(done) or 0, db.scalar(announced) or 0

    deadline = time.monotonic() + timeout_s
    # The last outcomes are recorded just after their emails reach the sink.
    while min(found := counted()) < events and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _hub_batch_rate(cfg: Config, base: str, key: str) -> float:
    """Events/s accepted through POST /v1/events:batch, 1,000 events per request."""
    total = max(1000, min(cfg.n * 5, 10_000))
    bodies = [
        httpx.Request(
            "POST",
            base,
            json={
                "events": [
                    {
                        "type": "user.registered",
                        "data": {
                            "user_id": str(i),
                            "email": f"batch-{i}@bench.example",
                            "name": "B",
                        },
                    }
                    for i in range(start, start + 1000)
                ]
            },
        ).read()
        for start in range(0, total, 1000)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    accepted = 0
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        began = time.perf_counter()
        for body in bodies:
            accepted += int(http.post("/v1/events:batch", content=body).json()["accepted"])
        elapsed = time.perf_counter() - began
    return accepted / elapsed


def _hub_warm_up(
    cfg: Config, base: str, key: str, sink: SinkProcess, stalled: Callable[[], str | None]
) -> int:
    """Open the SMTP pools, compile templates, fill the API's key cache; then forget it.

    Returns how many events it published.
    """
    warm = 4 * cfg.processes
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        for n in range(1, warm + 1):
            http.post("/v1/events", json=load.event_body("warm", 1, n)).raise_for_status()
    if not sink.wait_for(warm, cfg.timeout_s, stalled):
        raise RuntimeError(f"hub warm-up: {sink.count}/{warm} emails arrived ({stalled()})")
    sink.reset()
    return warm


def _hub_latency(
    cfg: Config, base: str, key: str, sink: SinkProcess, stalled: Callable[[], str | None]
) -> Latency:
    """Publish -> SMTP arrival at a fixed offered rate (open loop, Python publisher)."""
    run = asyncio.run(load.paced(base, key, "lat", cfg.latency_events, cfg.rate))
    sink.wait_for(run.accepted, cfg.timeout_s, stalled)
    arrivals, _ = settle(sink)
    sink.reset()
    latencies = sorted(
        (a.arrived_at - run.sent_at[a.recipient]) * 1000
        for a in arrivals
        if a.recipient in run.sent_at
    )

    def pct(p: float) -> float | None:
        return load.percentile(latencies, p) if latencies else None

    return Latency(
        offered_rate=cfg.rate,
        events=cfg.latency_events,
        accepted=run.accepted,
        achieved_rate=run.accepted / run.elapsed_s,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        max_ms=latencies[-1] if latencies else None,
        scheduler_lag_p99_ms=run.scheduler_lag_p99_ms,
        connection_wait_p99_ms=run.connection_wait_p99_ms,
        check=check_exactly_once(arrivals, set(run.sent_at)),
    )


def _hub_max_rate(
    cfg: Config, base: str, key: str, sink: SinkProcess, stalled: Callable[[], str | None]
) -> tuple[load.MaxRate, Throughput]:
    """N events as fast as the generator goes: accepted events/s and delivered emails/s."""
    run = load.max_rate(base, key, "h", cfg.n, cfg.wrk_threads, cfg.wrk_connections, cfg.timeout_s)
    sink.wait_for(run.accepted, cfg.timeout_s, stalled)
    arrivals, sessions = settle(sink)
    sink.reset()
    threads = cfg.wrk_threads if run.generator == "wrk" else 1
    done = nth_arrival(arrivals, cfg.n)
    delivered = Throughput(
        what="hub end to end, delivered",
        n=cfg.n,
        elapsed_s=done - run.started_at if done else None,
        completed=len(arrivals),
        smtp_sessions=sessions,
        check=check_exactly_once(arrivals, load.recipients("h", cfg.n, threads)),
        note=f"publishing took {run.elapsed_s:.2f} s of it",
    )
    return run, delivered


# ---------------------------------------------------------------- main


def run_phases(cfg: Config, report: Report, home: Path) -> None:
    """Every phase in turn on one Redis (flushed between phases) and one SMTP sink."""
    redis_server = EmbeddedRedis(home / "redis")
    broker_url = redis_server.start()
    flush = redis.Redis.from_url(broker_url).flushall
    sink = SinkProcess().start()
    phases: list[tuple[str, Callable[[], None]]] = [
        ("A", lambda: setattr(report, "a", phase_a(cfg, sink))),
        ("B", lambda: setattr(report, "b", phase_b(cfg, broker_url, sink, home))),
        ("C", lambda: setattr(report, "c", phase_c(cfg, broker_url, sink, home))),
        ("bare", lambda: setattr(report, "bare", phase_bare(cfg, home))),
        ("H", lambda: setattr(report, "h", phase_h(cfg, broker_url, sink, home / "hub"))),
    ]
    try:
        for name, phase in phases:
            if name not in cfg.phases:
                continue
            print(f"[bench] phase {name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                phase()
            except Exception as exc:  # one broken phase must not hide the others' numbers
                report.failures.append(f"phase {name}: {type(exc).__name__}: {exc}")
            print(f"[bench] phase {name}: {time.monotonic() - began:.1f} s", file=sys.stderr)
            flush()
            sink.reset()
    finally:
        sink.stop()
        redis_server.stop()


def failures(report: Report) -> list[str]:
    """Lost or duplicated emails, and phases that did not complete."""
    found = list(report.failures)
    for name, check in (
        ("B", report.b and report.b.check),
        ("H latency run", report.h.latency and report.h.latency.check),
        ("H max-rate run", report.h.delivered and report.h.delivered.check),
    ):
        if check is not None and not check.ok:
            found.append(f"{name}: {check.describe()}")
    for name, t in (("A", report.a), ("B", report.b), ("C", report.c), ("H", report.h.delivered)):
        if t is not None and t.elapsed_s is None:
            found.append(f"{name}: only {t.completed}/{t.n} completed in time")
    h = report.h
    if h.completion_expected is not None and not (
        h.completion_expected == h.completed_events == h.completion_announced
    ):
        found.append(
            f"H completion: {h.completed_events} completed and {h.completion_announced} "
            f"event.completed of {h.completion_expected} events"
        )
    return found


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute: N=200")
    parser.add_argument("--n", type=int, help="emails/events per phase (default 2000, quick 200)")
    parser.add_argument("--latency-events", type=int, help="events of the paced run (default N)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced run, events/s")
    parser.add_argument("--workers", type=int, default=1, help="worker instances (hub, B, C)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="processes per worker (hub, B, C); default 2 per core, as `hub worker`",
    )
    parser.add_argument("--pool-size", type=int, default=2, help="channels.email.pool_size")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--wrk-connections", type=int, default=64)
    parser.add_argument("--phases", default="A,B,C,bare,H", help="comma-separated subset")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--completion",
        action="store_true",
        help="H with completion on for user.registered (events completed, event.completed)",
    )
    parser.add_argument(
        "--database-server",
        default="",
        help="PostgreSQL URL (e.g. postgresql+psycopg://postgres@127.0.0.1/postgres): "
        "run H on a fresh database there instead of the embedded SQLite",
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="H with Prometheus metrics off (their cost)"
    )
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)
    return Config(
        n=n,
        latency_events=args.latency_events or n,
        rate=args.rate,
        workers=args.workers,
        concurrency=args.concurrency,
        pool_size=args.pool_size,
        wrk_threads=args.wrk_threads,
        wrk_connections=args.wrk_connections,
        quick=args.quick,
        phases=tuple(p.strip() for p in args.phases.split(",")),
        keep=args.keep,
        database_server=args.database_server,
        completion=args.completion,
        no_metrics=args.no_metrics,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed (Debian: apt-get install wrk); falling back to the Python "
            f"load generator, {load.PYTHON_GENERATOR}, which saturates sooner than wrk.",
            file=sys.stderr,
        )
    generator = "wrk" if load.wrk_version() else load.PYTHON_GENERATOR
    report = Report(config=cfg, generator=generator)
    home = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    cpu = CpuMeter()
    try:
        run_phases(cfg, report, home)
    finally:
        report.foreign_cpu_s, report.wall_s = cpu.foreign()
        report.git_at_end = git_state()
        report.failures = failures(report)
        table = print_table(report)
        path = write_json(report, table)
        print(f"results: {path.relative_to(REPO)}")
    if report.failures or cfg.keep:
        print(f"logs kept in {home}", file=sys.stderr)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if report.failures else 0
