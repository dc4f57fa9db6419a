"""Report another Celery application's task failures to a hub, in two lines.

::

    from hub.integrations.celery import install
    install(app, url="http://hub:8000", api_key=os.environ["HUB_API_KEY"], service="billing")

or, when the app shares the hub's broker, ``install(app, broker=True,
service="billing")``, which publishes with ``send_task("hub.publish")``.

What it publishes, each with an idempotency ``id`` so a resend never
duplicates:

- ``task.failed`` on Celery's ``task_failure``: ``service``, ``task_name``,
  ``task_id``, ``exception`` (the type's name), ``message``, ``traceback``,
  ``retries``, ``hostname``, ``queue``, and ``args``/``kwargs`` as
  :func:`summarise` strings (at most 1 KB each, secrets redacted);
- ``task.succeeded`` on the next success of a task name that failed *in the
  same process* (a prefork child that never saw the failure sends none);
- ``task.retried`` on ``task_retry``, with ``retried=True``.

It never breaks or slows the host app. A signal handler only builds the
event and puts it on a bounded in-memory queue (a full queue drops it, and
counts it); a daemon thread sends what is queued, up to 100 events in one
``POST /v1/events:batch``, with one reused HTTP client and a timeout. A hub
that is down is tried again after 1 s, doubling to a minute, while events
wait in the queue; what cannot be sent is dropped, with one log line a
minute, never an exception in a task. The thread starts lazily in the
process that publishes, so each prefork child runs its own. When a worker
process exits, what is still queued gets up to ``timeout_s`` to go out.

The host app is not a hub: this module imports nothing else from hub, and
reads no settings.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx
from celery import Celery
from celery.signals import task_failure, task_retry, task_success, worker_process_shutdown

log = logging.getLogger(__name__)

# Size limits, so an event always fits the hub's (api.max_string_bytes is 64 KiB).
SUMMARY_BYTES = 1024
MESSAGE_CHARS = 2048
TRACEBACK_CHARS = 8192  # its end: where the exception was raised
BATCH_MAX = 100
ID_MAX = 200  # the hub's longest idempotency key
# After a failed send, the sender waits this long, doubling, before the next.
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
# Task names remembered as failed, per process, for task.succeeded.
FAILED_NAMES_MAX = 1000
REDACTED = "[redacted]"
MAX_DEPTH = 8

# `password=...`, `'api_key': '...'`, `?token=...` in strings and other objects' reprs.
_SECRET_PAIR = re.compile(
    r"""((?:password|secret|token|key)\w*["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&)}\]]+)""",
    re.IGNORECASE,
)
_STOP = object()


def summarise(value: object, limit_bytes: int = SUMMARY_BYTES) -> str:
    """A repr-like summary of task arguments: at most ``limit_bytes`` of UTF-8, secrets redacted.

    In dicts at any depth, a positional argument's included, the value of a
    key containing ``password``, ``secret``, ``token`` or ``key`` (in any
    case) becomes ``[redacted]``; in strings and other objects' reprs,
    ``name=value`` and ``name: value`` pairs with such names are masked. Only
    what fits is walked, so a huge argument costs no more than a small one. A
    cut summary ends with ``...``.
    """
    out = _Summary(limit_bytes)
    complete = True
    try:
        _write(value, out, 0)
    except _Full:
        complete = False
    text = "".join(out.parts)
    encoded = text.encode()
    if complete and len(encoded) <= limit_bytes:
        return text
    return encoded[: limit_bytes - 3].decode(errors="ignore") + "..."


class _Full(Exception):
    """The summary reached its size: the rest is left out."""


class _Summary:
    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.room = limit  # in characters, never more than the bytes they take

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.room -= len(text)
        if self.room < 0:
            raise _Full


def _write(value: object, out: _Summary, depth: int) -> None:
    if depth > MAX_DEPTH:
        out.add("...")
    elif isinstance(value, (dict, Mapping)):  # dict first: an ABC check is slow
        separator = "{"
        for key, item in value.items():
            out.add(f"{separator}{_leaf(key, out.room, mask=False)}: ")
            if isinstance(key, str) and _secret(key):
                out.add(f"'{REDACTED}'")
            else:
                _write(item, out, depth + 1)
            separator = ", "
        out.add("{}" if separator == "{" else "}")
    elif isinstance(value, (list, tuple, set, frozenset)):
        brackets = "[]" if isinstance(value, list) else "()" if isinstance(value, tuple) else "{}"
        separator = brackets[0]
        for item in value:
            out.add(separator)
            _write(item, out, depth + 1)
            separator = ", "
        if separator == brackets[0]:
            out.add(brackets)
        elif isinstance(value, tuple) and len(value) == 1:
            out.add(",)")
        else:
            out.add(brackets[1])
    else:
        out.add(_leaf(value, out.room))


def _leaf(value: object, room: int, mask: bool = True) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (str, bytes)):
        # Cut before repr: a 100 MB argument must cost no more than a short one.
        text = repr(value[: max(room, 0) + 1])
    else:
        try:
            text = repr(value)
        except Exception:  # a broken __repr__ in the host app must not lose the report
            text = f"<{type(value).__name__}>"
    # A key is a name: if it names a secret, its value is what gets redacted.
    return _mask(text) if mask else text


def _secret(text: str) -> bool:
    # Substring searches in C: far cheaper than the pattern on text without secrets.
    lowered = text.lower()
    return "password" in lowered or "secret" in lowered or "token" in lowered or "key" in lowered


def _mask(text: str) -> str:
    return _SECRET_PAIR.sub(rf"\1{REDACTED}", text) if _secret(text) else text


class RateLimitedLog:
    """Warnings at most once per ``interval_s``; a line counts those it held back.

    ``clock`` is injectable so tests need not wait a minute.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        """Log ``message`` unless a line went out less than ``interval_s`` ago."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval_s:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        if held:
            message, args = f"{message} (%d more since the last line)", (*args, held)
        self._logger.warning(message, *args)


class Integration:
    """What :func:`install` set up: signal handlers, the queue and this process's sender thread.

    ``sent``, ``dropped`` (queue full, hub unreachable or refusing) and
    ``rejected`` (the hub refused the event itself) count this process's events.
    """

    def __init__(
        self,
        app: Celery,
        service: str,
        url: str | None,
        api_key: str | None,
        hub_queue: str,
        timeout_s: float,
        max_queue: int,
    ) -> None:
        self.sent = self.dropped = self.rejected = 0
        self._app = app
        self._service = service
        self._url = url
        self._api_key = api_key
        self._hub_queue = hub_queue
        self._timeout_s = timeout_s
        self._max_queue = max_queue
        self._failed: dict[str, None] = {}
        self._log = RateLimitedLog(log)
        self._pid: int | None = None
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # cuts the sender's backoff short to flush
        self._lock = threading.Lock()
        # A fork while another thread held the lock would leave it held forever in the child.
        os.register_at_fork(after_in_child=self._new_lock)

    def close(self) -> None:
        """Stop reporting: disconnect the handlers, send what is queued (up to ``timeout_s``)."""
        for signal in (task_failure, task_success, task_retry, worker_process_shutdown):
            signal.disconnect(dispatch_uid=self._uid(signal.name))
        atexit.unregister(self.flush)
        self.flush()

    def flush(self, **_: object) -> None:
        """Send what this process queued, for up to ``timeout_s``, and stop its sender.

        Runs as a worker process exits (and at interpreter exit): its sender
        is a daemon thread, and a recycled prefork child would otherwise take
        its last failures with it.
        """
        with self._lock:
            thread, mine = self._thread, self._pid == os.getpid()
            self._thread, self._pid = None, None
        if thread is None or not mine:
            return
        deadline = time.monotonic() + self._timeout_s
        self._wake.set()
        try:
            self._queue.put(_STOP, timeout=self._timeout_s)
        except queue.Full:
            return  # the sender is stuck on an unresponsive hub: what is queued is lost
        thread.join(max(deadline - time.monotonic(), 0))

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def _uid(self, signal_name: str) -> str:
        return f"hub.integrations.celery:{id(self)}:{signal_name}"

    def _connect(self, retried: bool) -> None:
        # Strong references: the host app may drop what install() returns.
        task_failure.connect(self._on_failure, weak=False, dispatch_uid=self._uid("task_failure"))
        task_success.connect(self._on_success, weak=False, dispatch_uid=self._uid("task_success"))
        if retried:
            task_retry.connect(self._on_retry, weak=False, dispatch_uid=self._uid("task_retry"))
        worker_process_shutdown.connect(
            self.flush, weak=False, dispatch_uid=self._uid("worker_process_shutdown")
        )
        atexit.register(self.flush)

    # ---- in the task's thread: build the event, queue it, never raise ----

    def _on_failure(
        self,
        sender: Any,
        task_id: str,
        exception: BaseException,
        args: Any,
        kwargs: Any,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        try:
            if getattr(sender, "app", None) is not self._app:
                return
            request = sender.request
            retries = int(request.retries or 0)
            if len(self._failed) < FAILED_NAMES_MAX:
                self._failed[sender.name] = None
            data = {
                **self._about(sender.name, task_id, request),
                **_exception_fields(exception, getattr(einfo, "traceback", None)),
                "retries": retries,
                "args": summarise(args),
                "kwargs": summarise(kwargs),
            }
            self._submit("task.failed", data, task_id, str(retries))
        except Exception as exc:  # the task's outcome must stay its own
            self._lost(f"could not build a task.failed event: {exc!r}")

    def _on_success(self, sender: Any, **_: Any) -> None:
        try:
            # Every success in the host app comes here: one dict lookup for the usual case.
            if sender.name not in self._failed or sender.app is not self._app:
                return
            self._failed.pop(sender.name, None)
            request = sender.request
            task_id = str(request.id)
            self._submit("task.succeeded", self._about(sender.name, task_id, request), task_id)
        except Exception as exc:
            self._lost(f"could not build a task.succeeded event: {exc!r}")

    def _on_retry(
        self, sender: Any, request: Any, reason: Any, einfo: Any = None, **_: Any
    ) -> None:
        try:
            if getattr(sender, "app", None) is not self._app:
                return
            retries = int(request.retries or 0)
            # reason is Celery's Retry; what went wrong is its exc, when the task gave one.
            exception = getattr(reason, "exc", None) or reason
            data = {
                **self._about(sender.name, str(request.id), request),
                **_exception_fields(exception, getattr(einfo, "traceback", None)),
                "retries": retries,
                "args": summarise(request.args),
                "kwargs": summarise(request.kwargs),
            }
            self._submit("task.retried", data, str(request.id), str(retries))
        except Exception as exc:
            self._lost(f"could not build a task.retried event: {exc!r}")

    def _about(self, task_name: str, task_id: str, request: Any) -> dict[str, Any]:
        about = {
            "service": self._service,
            "task_name": task_name,
            "task_id": task_id,
            "hostname": request.hostname,
            "queue": (request.delivery_info or {}).get("routing_key"),
        }
        # An eagerly applied task has no worker or queue; the schema takes strings only.
        return {name: value for name, value in about.items() if value is not None}

    def _submit(self, event_type: str, data: dict[str, Any], *id_parts: str) -> None:
        if self._pid != os.getpid():
            self._start()
        event = {"type": event_type, "id": _event_id(event_type, self._service, *id_parts)}
        try:
            self._queue.put_nowait({**event, "data": data})
        except queue.Full:
            self._lost("the queue is full", dropped=1)

    def _start(self) -> None:
        """Start this process's sender: after a fork, the parent's thread does not exist here."""
        with self._lock:
            if self._pid == os.getpid():
                return
            # The parent's queue may hold its events (the parent sends those)
            # and a lock held at the fork: this process starts afresh.
            self._queue = queue.Queue(self._max_queue)
            self._wake = threading.Event()
            self.sent = self.dropped = self.rejected = 0
            self._thread = threading.Thread(
                target=self._run,
                args=(self._queue, self._wake),
                name="hub-integration",
                daemon=True,
            )
            self._thread.start()
            self._pid = os.getpid()

    def _lost(self, why: str, dropped: int = 0) -> None:
        with self._lock:
            self.dropped += dropped
            total = self.dropped
        self._log.warning("hub.integrations.celery: %s; %d events dropped so far", why, total)

    # ---- in the sender thread ----

    def _run(self, events: queue.Queue[object], wake: threading.Event) -> None:
        http = None
        if self._url is not None:
            headers = {"Authorization": f"Bearer {self._api_key}"}
            http = httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout_s)
        backoff_s = 0.0
        try:
            while True:
                batch, stop = _take(events)
                delivered = self._deliver(http, batch)
                if stop:
                    return
                # Trying a hub that is down at every failure would spend the
                # host app's CPU (and its GIL) on connection errors: meanwhile
                # events wait in the queue, and once it is full they are dropped.
                backoff_s = (
                    0.0 if delivered else min(max(2 * backoff_s, BACKOFF_MIN_S), BACKOFF_MAX_S)
                )
                wake.wait(backoff_s)
        finally:
            if http is not None:
                http.close()

    def _deliver(self, http: httpx.Client | None, batch: list[dict[str, Any]]) -> bool:
        """Send a batch; whether the hub (or the broker) could be reached."""
        if http is not None:
            return self._send(batch, partial(_post, http, batch))
        for n, event in enumerate(batch):
            # The broker has no batch task: one message each, and none after a failure.
            if not self._send([event], partial(self._send_task, event)):
                with self._lock:
                    self.dropped += len(batch) - n - 1
                return False
        return True

    def _send(self, batch: list[dict[str, Any]], deliver: Callable[[], list[str]]) -> bool:
        if not batch:
            return True
        try:
            try:
                refusals = deliver()
            except (httpx.TimeoutException, httpx.ReadError, httpx.RemoteProtocolError):
                # The hub may have stored it, or the kept-alive connection went
                # stale: once more, and the ids make a repeat harmless.
                refusals = deliver()
        except Exception as exc:  # whatever failed, the events are lost
            target = self._url or f"the broker (queue {self._hub_queue})"
            self._lost(f"could not publish to {target}: {exc!r}", dropped=len(batch))
            return False
        with self._lock:
            self.sent += len(batch) - len(refusals)
            self.rejected += len(refusals)
        if refusals:
            self._log.warning("the hub rejected %d events: %s", len(refusals), refusals[0])
        return True

    def _send_task(self, event: dict[str, Any]) -> list[str]:
        # The hub's queue and serializer, whatever the host app's defaults are.
        self._app.send_task(
            "hub.publish",
            kwargs=event,
            queue=self._hub_queue,
            serializer="json",
            retry_policy={"max_retries": 2, "interval_start": 0.5, "interval_step": 1},
        )
        return []


def _take(events: queue.Queue[object]) -> tuple[list[dict[str, Any]], bool]:
    """Wait for an event, then take what else is queued, up to a batch; and whether to stop."""
    batch: list[dict[str, Any]] = []
    item = events.get()
    while item is not _STOP:
        assert isinstance(item, dict)
        batch.append(item)
        if len(batch) == BATCH_MAX:
            return batch, False
        try:
            item = events.get_nowait()
        except queue.Empty:
            return batch, False
    return batch, True


def _post(http: httpx.Client, batch: list[dict[str, Any]]) -> list[str]:
    """Publish a batch; the errors of the events the hub rejected."""
    response = http.post("/v1/events:batch", json={"events": batch})
    # 422: every event was rejected, each with its errors, in the same shape.
    if response.status_code not in (202, 422):
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    results = response.json()["results"]
    return [str(r.get("errors")) for r in results if r.get("status") == "rejected"]


def _exception_fields(exception: BaseException, traceback: str | None) -> dict[str, str]:
    # Celery wraps an exception it cannot pickle; the original type's name is kept on it.
    name = getattr(exception, "exc_cls_name", None) or type(exception).__name__
    message = str(exception)
    masked = _mask(message)
    fields = {"exception": str(name), "message": masked[:MESSAGE_CHARS]}
    if traceback:
        # Values appear in a traceback through its last line, the message;
        # its other lines are source code.
        if masked != message:
            traceback = traceback.replace(message, masked)
        fields["traceback"] = traceback[-TRACEBACK_CHARS:]
    return fields


def _event_id(*parts: str) -> str:
    """``task.failed:<service>:<task_id>:<retries>``; hashed past the hub's longest key."""
    key = ":".join(parts)
    if len(key) <= ID_MAX:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def install(
    app: Celery,
    *,
    service: str,
    url: str | None = None,
    api_key: str | None = None,
    broker: bool = False,
    retried: bool = False,
    hub_queue: str = "celery",
    timeout_s: float = 5.0,
    max_queue: int = 1000,
) -> Integration:
    """Report ``app``'s task failures to a hub as ``service``: over HTTP, or ``broker=True``.

    Over HTTP, ``url`` is the hub's API and ``api_key`` a key that may
    publish ``task.*``. With ``broker=True`` the app must share the hub's
    broker; events go to the hub's ``hub_queue`` (``celery``, which the
    host app's own workers must then not consume). ``retried=True`` also
    publishes ``task.retried``. ``timeout_s`` bounds each request and the
    flush at exit; ``max_queue`` events wait at most, the rest are dropped.
    Raises :class:`ValueError` for a contradictory call, at start-up.
    """
    if not service:
        raise ValueError("install(): service must name the reporting service")
    if broker == (url is not None):
        raise ValueError("install(): give either url= and api_key=, or broker=True")
    if url is not None and not api_key:
        raise ValueError("install(): url= needs api_key=")
    integration = Integration(app, service, url, api_key, hub_queue, timeout_s, max_queue)
    integration._connect(retried)
    return integration
