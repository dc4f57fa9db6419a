"""Prometheus metrics: what the hub counts, and how a scrape reads it back.

Counting is off until a process calls :func:`enable` (the API at start-up, a
worker's main process before its pool forks); until then every recording
function returns at once, so a CLI command or a test pays nothing. Counts are
kept in prometheus-client's multiprocess files, one folder per process tree
under ``<var_dir>/metrics/`` (``api-<host>-<pid>``, ``worker-<host>-<pid>``),
because a prefork worker's pool processes cannot share memory:

- the API's ``/metrics`` reads every folder under it: the API and every
  worker on its machine;
- a worker's own ``/metrics`` (``worker.metrics_port``) reads its own folder,
  so a worker on another machine is scraped on its own and nothing relies on
  a folder shared between machines or containers.

Folders of processes that are gone are removed when an API or a worker
starts (their counters then restart from zero, which Prometheus takes as a
reset). Queue depths and circuit states are not counted: they are read from
the broker when scraped (:class:`QueueDepths`).

prometheus-client is imported by :func:`enable`, after it has named the
folder: the library picks its multiprocess mode from the environment when a
metric is made.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

    from hub.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SEND_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass(frozen=True, slots=True)
class _Metrics:
    events: Counter
    notifications: Counter
    send_seconds: Histogram
    retries: Counter
    rate_limit_wait: Histogram
    circuit_open: Gauge
    folder: Path


_metrics: _Metrics | None = None


def folder_of(settings: Settings) -> Path:
    """Where every process of this machine keeps its metrics files."""
    return settings.var_dir.resolve() / "metrics"


def enable(settings: Settings, role: str) -> Path | None:
    """Count from now on in this process and the processes it forks; the folder used.

    ``role`` names the folder (``api``, ``worker``). Does nothing and returns
    None when ``worker.metrics`` is off.
    """
    global _metrics
    if not settings.worker.metrics:
        return None
    root = folder_of(settings)
    remove_stale(root)
    own = root / f"{role}-{socket.gethostname()}-{os.getpid()}"
    own.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(own)
    from prometheus_client import Counter, Gauge, Histogram, values

    # A fresh file table: a process enabled twice (tests) must not write on
    # into the files of its first folder.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _metrics = _Metrics(
        events=Counter(
            "hub_events", "Events published, by outcome", ["type", "outcome"], registry=None
        ),
        notifications=Counter(
            "hub_notifications",
            "Notification attempts by the state they ended in",
            ["channel", "status"],
            registry=None,
        ),
        send_seconds=Histogram(
            "hub_send_seconds",
            "Time of one provider call",
            ["channel"],
            buckets=SEND_BUCKETS_S,
            registry=None,
        ),
        retries=Counter("hub_retries", "Attempts that will be retried", ["channel"], registry=None),
        rate_limit_wait=Histogram(
            "hub_rate_limit_wait_seconds",
            "Waits a rate limit (or a provider's pause) imposed on a notification",
            ["channel"],
            buckets=WAIT_BUCKETS_S,
            registry=None,
        ),
        circuit_open=Gauge(
            "hub_circuit_open",
            "1 while a provider's circuit is open, as the last batch through it saw",
            ["channel", "provider"],
            multiprocess_mode="livemostrecent",
            registry=None,
        ),
        folder=own,
    )
    return own


def disable() -> None:
    """Stop counting in this process (tests)."""
    global _metrics
    _metrics = None


def enabled() -> bool:
    return _metrics is not None


def remove_stale(root: Path) -> None:
    """Remove the folders of this host's processes that are gone."""
    if not root.is_dir():
        return
    host = socket.gethostname()
    for folder in root.iterdir():
        role_host, _, pid = folder.name.rpartition("-")
        if not (pid.isdigit() and role_host.partition("-")[2] == host) or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exited(pid: int) -> None:
    """A pool process ends: its live gauges (circuit states) stop counting."""
    if _metrics is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(_metrics.folder))  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- recording
# Each is a no-op until enable(); callers count a batch at a time where they can.


def event(event_type: str, outcome: str, count: int = 1) -> None:
    if _metrics is not None and count:
        _metrics.events.labels(event_type, outcome).inc(count)


def notifications(channel: str, counts: Mapping[str, int]) -> None:
    if _metrics is not None:
        for status, count in counts.items():
            _metrics.notifications.labels(channel, status).inc(count)


def send_seconds(channel: str, durations_s: Sequence[float]) -> None:
    if _metrics is not None and durations_s:
        histogram = _metrics.send_seconds.labels(channel)
        for seconds in durations_s:
            histogram.observe(seconds)


def retries(channel: str, count: int) -> None:
    if _metrics is not None and count:
        _metrics.retries.labels(channel).inc(count)


def rate_limit_waits(channel: str, waits_s: Sequence[float]) -> None:
    if _metrics is not None and waits_s:
        histogram = _metrics.rate_limit_wait.labels(channel)
        for seconds in waits_s:
            histogram.observe(seconds)


def circuit(channel: str, provider: str, is_open: bool) -> None:
    if _metrics is not None:
        _metrics.circuit_open.labels(channel, provider).set(1.0 if is_open else 0.0)


# ---------------------------------------------------------------- scraping


def render(settings: Settings, folders: Sequence[Path]) -> bytes:
    """The Prometheus text of the counts in ``folders`` and of the queues now."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Files(folders))
    registry.register(QueueDepths(settings))
    return bytes(generate_latest(registry))


def machine_folders(settings: Settings) -> list[Path]:
    """Every process folder of this machine (what the API's /metrics covers)."""
    root = folder_of(settings)
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def own_folders() -> list[Path]:
    """This process tree's folder (what a worker's own /metrics covers)."""
    return [_metrics.folder] if _metrics is not None else []


class _Files:
    """prometheus-client's multiprocess collector over several folders."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self._folders = folders

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [str(path) for folder in self._folders for path in folder.glob("*.db")]
        merged = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return iter(merged)


class QueueDepths:
    """``hub_queue_depth{queue}`` from the broker and ``hub_oldest_queued_seconds`` from the
    store, read at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from hub.health import oldest_queued_s, queue_depths

        family = GaugeMetricFamily(
            "hub_queue_depth",
            "Messages waiting in each queue (read when scraped)",
            labels=["queue"],
        )
        try:
            depths = queue_depths(self._settings)
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("hub_queue_depth left out: %s", exc)
            depths = {}
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family
        try:
            oldest_s = oldest_queued_s(self._settings)
        except Exception as exc:
            log.warning("hub_oldest_queued_seconds left out: %s", exc)
            return
        yield GaugeMetricFamily(
            "hub_oldest_queued_seconds",
            "Age of the oldest notification still queued (read when scraped)",
            value=oldest_s,
        )


def serve(
    port: int,
    settings: Settings,
    host: str = "0.0.0.0",  # noqa: S104
    folders: Callable[[], Sequence[Path]] = lambda: own_folders(),
) -> Any:
    """Serve ``/metrics`` of ``folders`` (this process tree's) on ``port`` from a daemon
    thread; the server. The caller shuts it down with ``server.shutdown()``.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render(settings, folders())
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per scrape is noise

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="hub-metrics", daemon=True).start()
    return server
