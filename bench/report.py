"""What the bench measured, checked and prints: result types, the table, the JSON record.

The targets are reported next to the measured values as met / not met; nothing
here asserts on a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import load
from bench.sink import Arrival

RESULTS = Path(__file__).parent / "results"
PACKAGES = ("celery", "kombu", "redis", "aiosmtplib", "fastapi", "uvicorn", "sqlalchemy")
TARGETS = {
    "h_over_b": 1.5,
    "h_over_a": 0.6,
    "p99_ms": 100.0,
    "accepted_per_s": 1000.0,
    "batch_per_s": 10000.0,
}
RSS_TARGET_MB = 250.0
FOREIGN_CPU_WARNING = 0.05


def git_state() -> dict[str, object]:
    """The commit measured and the files changed on top of it (the hub may be mid-edit)."""

    def git(*args: str) -> str:
        found = subprocess.run(
            ["git", *args], cwd=RESULTS.parent.parent, capture_output=True, text=True, check=False
        )
        return found.stdout

    diff = git("diff", "HEAD")
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "changed": [line[3:] for line in git("status", "--porcelain").splitlines()],
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16],
    }


@dataclass(frozen=True)
class Config:
    n: int
    latency_events: int
    rate: float
    workers: int
    concurrency: int
    pool_size: int
    wrk_threads: int
    wrk_connections: int
    quick: bool
    phases: tuple[str, ...] = ("A", "B", "C", "bare", "H")
    keep: bool = False
    # A PostgreSQL server URL: H runs on a fresh database there instead of SQLite.
    database_server: str = ""
    # H with completion on for user.registered (its cost: check, event.completed, its routing).
    completion: bool = False
    # H with Prometheus metrics off (worker.metrics = false): their cost per email.
    no_metrics: bool = False

    @property
    def processes(self) -> int:
        """Worker processes of the hub (and of B and C): workers x concurrency."""
        return self.workers * self.concurrency

    @property
    def smtp_connections(self) -> int:
        """C: the SMTP connections the hub keeps, one pool per worker process."""
        return self.processes * self.pool_size

    @property
    def timeout_s(self) -> float:
        return 60 + max(self.n, self.latency_events) / 10


@dataclass
class Check:
    """Did every expected recipient get exactly one email?"""

    expected: int
    received: int
    duplicates: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicate_message_ids: int = 0

    @property
    def ok(self) -> bool:
        faults = (self.duplicates, self.missing, self.unexpected, self.duplicate_message_ids)
        return not any(faults) and self.received == self.expected

    def describe(self) -> str:
        if self.ok:
            return f"ok: {self.received}/{self.expected} exactly once"
        return (
            f"FAILED: {self.received}/{self.expected} received, {self.missing} missing, "
            f"{self.duplicates} duplicates, {self.unexpected} unexpected, "
            f"{self.duplicate_message_ids} repeated Message-IDs"
        )


def check_exactly_once(arrivals: list[Arrival], expected: set[str]) -> Check:
    per_recipient = Counter(a.recipient for a in arrivals)
    per_message_id = Counter(a.message_id for a in arrivals)
    return Check(
        expected=len(expected),
        received=len(arrivals),
        duplicates=sum(c - 1 for c in per_recipient.values()),
        missing=len(expected - per_recipient.keys()),
        unexpected=len(per_recipient.keys() - expected),
        duplicate_message_ids=sum(c - 1 for c in per_message_id.values())
        + per_message_id.get("", 0),
    )


@dataclass
class Throughput:
    """N items from the first send to the N-th completion."""

    what: str
    n: int
    elapsed_s: float | None  # None: not all N completed in time
    completed: int
    smtp_sessions: int | None = None
    check: Check | None = None
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.n / self.elapsed_s if self.elapsed_s else None


@dataclass
class Latency:
    offered_rate: float
    events: int
    accepted: int
    achieved_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    scheduler_lag_p99_ms: float
    connection_wait_p99_ms: float
    check: Check | None = None


@dataclass
class HubResult:
    latency: Latency | None = None
    max_rate: load.MaxRate | None = None
    delivered: Throughput | None = None
    # Events accepted per second through POST /v1/events:batch (1,000 per request).
    batch_rate: float | None = None
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    api_peak_rss_mb: float | None = None
    # With completion on: events completed, and event.completed events stored,
    # after the max-rate run; both must equal the user.registered events so far.
    completion_expected: int | None = None
    completed_events: int | None = None
    completion_announced: int | None = None


@dataclass
class Report:
    config: Config
    generator: str
    a: Throughput | None = None
    b: Throughput | None = None
    c: Throughput | None = None
    bare: load.MaxRate | None = None
    h: HubResult = field(default_factory=HubResult)
    failures: list[str] = field(default_factory=list)
    # The working tree at the start and end: the hub may be edited while the bench runs.
    git_at_start: dict[str, object] = field(default_factory=git_state)
    git_at_end: dict[str, object] = field(default_factory=dict)
    # CPU seconds other processes on the machine used while the bench ran, of wall x cores.
    foreign_cpu_s: float | None = None
    wall_s: float | None = None


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top and bottom else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def rows(report: Report) -> list[tuple[str, str, str, str, str]]:
    """(phase, what, measured, target, verdict) for every line of the table."""
    cfg, h = report.config, report.h
    a, b, c = (t.rate if t else None for t in (report.a, report.b, report.c))
    delivered = h.delivered.rate if h.delivered else None
    accepted = h.max_rate.rate if h.max_rate else None
    bare = report.bare.rate if report.bare else None
    lat = h.latency
    p99 = lat.p99_ms if lat else None
    peak = max(h.worker_peak_rss_mb.values(), default=None)
    table = [
        ("A", f"raw aiosmtplib, C={cfg.smtp_connections} persistent conns", _fmt(a, " emails/s"))
        + ("", ""),
        ("B", "seed-style Celery, new SMTP conn per email", _fmt(b, " emails/s"), "", ""),
        ("C", "bare Celery, no-op task", _fmt(c, " tasks/s"), "", ""),
        ("H", "hub delivered (N at max publish rate)", _fmt(delivered, " emails/s"), "", ""),
        ("H", f"hub accepted events/s ({report.generator})", _fmt(accepted, " ev/s"))
        + (
            f">= {TARGETS['accepted_per_s']:.0f} ev/s",
            _verdict(_at_least(accepted, TARGETS["accepted_per_s"])),
        ),
        ("H", "hub batch publish (/v1/events:batch)", _fmt(h.batch_rate, " ev/s"))
        + (
            f">= {TARGETS['batch_per_s']:.0f} ev/s",
            _verdict(_at_least(h.batch_rate, TARGETS["batch_per_s"])),
        ),
        ("-", f"bare FastAPI 202 ({report.generator})", _fmt(bare, " req/s"), "", ""),
        (
            "H",
            f"publish->SMTP p50/p95/p99 @{cfg.rate:g} ev/s",
            " / ".join(_fmt(v) for v in (lat.p50_ms, lat.p95_ms, p99)) + " ms" if lat else "n/a",
            f"p99 < {TARGETS['p99_ms']:.0f} ms",
            _verdict(None if p99 is None else p99 < TARGETS["p99_ms"]),
        ),
        (
            "H",
            f"worker peak RSS, max of {len(h.worker_peak_rss_mb)} processes",
            _fmt(peak, " MB", 1),
            f"< {RSS_TARGET_MB:.0f} MB",
            _verdict(None if peak is None else peak < RSS_TARGET_MB),
        ),
    ]
    h_b, h_a = _ratio(delivered, b), _ratio(delivered, a)
    table += [
        ("ratio", "H/B delivered emails/s", _fmt(h_b, "x", 2))
        + (f">= {TARGETS['h_over_b']}x", _verdict(_at_least(h_b, TARGETS["h_over_b"]))),
        ("ratio", "H/A delivered emails/s", _fmt(h_a, "x", 2))
        + (f">= {TARGETS['h_over_a']}x", _verdict(_at_least(h_a, TARGETS["h_over_a"]))),
        ("ratio", "H/C delivered emails/s", _fmt(_ratio(delivered, c), "x", 2), "", ""),
        ("ratio", "hub publish / bare FastAPI", _fmt(_ratio(accepted, bare), "x", 2), "", ""),
    ]
    checks = [
        ("B", report.b and report.b.check),
        ("H @rate", lat and lat.check),
        ("H max", h.delivered and h.delivered.check),
    ]
    for name, check in checks:
        table.append(("check", f"{name}: every email exactly once", _describe(check), "", ""))
    return table


def _describe(check: Check | None) -> str:
    return check.describe() if check else "not run"


def print_table(report: Report) -> str:
    cfg = report.config
    generator = f"{report.generator}, {cfg.wrk_connections} connections"
    if report.generator == "wrk":
        generator = f"wrk, {cfg.wrk_threads} thread(s) x {cfg.wrk_connections} connections"
    lines = [
        f"python -m bench: N={cfg.n}, {os.cpu_count()} cores; {cfg.workers} worker x concurrency "
        f"{cfg.concurrency} = {cfg.processes} worker processes; email pool_size {cfg.pool_size}"
        f" -> C = {cfg.smtp_connections} SMTP connections",
        f"HTTP max rate: {generator}; latency: Python paced publisher, "
        f"{cfg.latency_events} events at {cfg.rate:g}/s",
    ]
    table = rows(report)
    header = ("phase", "what", "measured", "target", "")
    widths = [max(len(r[i]) for r in [*table, header]) for i in range(5)]
    for row in [header, *table]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    lines += [f"  {note}" for note in notes(report)]
    lines += [f"FAILED: {failure}" for failure in report.failures]
    text = "\n".join(line.rstrip() for line in lines)
    print(text, flush=True)
    return text


def notes(report: Report) -> list[str]:
    """Context for reading the numbers: durations, SMTP sessions, publish latency."""
    out = []
    for label, t in (("A", report.a), ("B", report.b), ("C", report.c), ("H", report.h.delivered)):
        if t is not None:
            sessions = "" if t.smtp_sessions is None else f", {t.smtp_sessions} new SMTP sessions"
            extra = f", {t.note}" if t.note else ""
            out.append(
                f"{label}: {t.completed}/{t.n} in {_fmt(t.elapsed_s, ' s', 2)}{sessions}{extra}"
            )
    for label, run in (("hub publish", report.h.max_rate), ("bare publish", report.bare)):
        if run is not None:
            errors = f", socket errors: {run.errors}" if run.errors else ""
            out.append(
                f"{label}: {run.accepted}/{run.total} accepted in {run.elapsed_s:.2f} s, "
                f"HTTP p50 {_fmt(run.latency_p50_ms, ' ms', 1)}, "
                f"p99 {_fmt(run.latency_p99_ms, ' ms', 1)}{errors}"
            )
    if lat := report.h.latency:
        out.append(
            f"latency run: {lat.accepted}/{lat.events} accepted at {lat.achieved_rate:.0f} ev/s, "
            f"max {_fmt(lat.max_ms, ' ms')}; publisher p99 lag {lat.scheduler_lag_p99_ms:.1f} ms, "
            f"p99 wait for a free connection {lat.connection_wait_p99_ms:.1f} ms"
        )
    if api := report.h.api_peak_rss_mb:
        out.append(f"hub API peak RSS {api:.1f} MB (not a worker)")
    if report.config.completion:
        h = report.h
        out.append(
            f"completion on for user.registered: {h.completed_events}/{h.completion_expected} "
            f"events completed, {h.completion_announced} event.completed published"
        )
    if report.foreign_cpu_s is not None and report.wall_s:
        share = report.foreign_cpu_s / (report.wall_s * (os.cpu_count() or 1))
        out.append(
            f"other processes on this machine used {report.foreign_cpu_s:.1f} CPU-s during the "
            f"{report.wall_s:.0f} s run ({share:.0%} of all cores)"
            + ("; WARNING: the numbers are disturbed" if share > FOREIGN_CPU_WARNING else "")
        )
    start, end = report.git_at_start, report.git_at_end
    out.append(f"measured: commit {str(start.get('commit'))[:10]}, changed: {start.get('changed')}")
    if end and end != start:
        out.append(
            f"WARNING: the working tree changed during the run: now commit "
            f"{str(end.get('commit'))[:10]}, changed: {end.get('changed')}"
        )
    return out


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    found |= {name: version(name) for name in PACKAGES}
    found["wrk"] = load.wrk_version() or "not installed"
    return found


def write_json(report: Report, table: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "versions": versions(),
        "targets": TARGETS | {"worker_rss_mb": RSS_TARGET_MB},
        **asdict(report),
        "rates": {
            "A_emails_per_s": report.a and report.a.rate,
            "B_emails_per_s": report.b and report.b.rate,
            "C_tasks_per_s": report.c and report.c.rate,
            "H_delivered_emails_per_s": report.h.delivered and report.h.delivered.rate,
            "H_accepted_events_per_s": report.h.max_rate and report.h.max_rate.rate,
            "H_batch_accepted_events_per_s": report.h.batch_rate,
            "bare_fastapi_per_s": report.bare and report.bare.rate,
        },
        "table": table.splitlines(),
    }
    path = RESULTS / f"bench-{'quick-' if report.config.quick else ''}{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
