"""Run the hub's processes side by side for ``hub up`` and stop them together."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies."""
    # Linux: the child gets SIGTERM if `hub up` itself dies, even by SIGKILL,
    # so no worker or server is ever orphaned.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# A child restarted this often within CRASH_LOOP_WINDOW_S is crash-looping:
# restarting it again would only hide the fault, so the stack stops.
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW_S = 60.0
MAX_BACKOFF_S = 30.0


@dataclass
class Supervisor:
    """Runs named child processes and restarts one that dies, with backoff.

    :meth:`wait` returns on SIGINT or SIGTERM, or when a child crash-loops.
    """

    env: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)
    crash_looping: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        process = self._spawn(name, args)
        threading.Thread(target=self._watch, args=(name, args), daemon=True).start()
        return process

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            process = subprocess.Popen(args, env=self.env, preexec_fn=die_with_parent)
            self.children[name] = process
            return process

    def _watch(self, name: str, args: list[str]) -> None:
        recent: list[float] = []
        while True:
            code = self.children[name].wait()
            if self._stop.is_set():
                return
            now = time.monotonic()
            recent = [t for t in recent if now - t < CRASH_LOOP_WINDOW_S] + [now]
            if len(recent) > CRASH_LOOP_RESTARTS:
                _say(f"{name} exited {len(recent)} times within {CRASH_LOOP_WINDOW_S:.0f}s")
                self.crash_looping = name
                self._stop.set()
                return
            self.restarts[name] += 1
            backoff_s = min(2.0 ** (len(recent) - 1), MAX_BACKOFF_S)
            _say(
                f"{name} exited (code {code}); restarting in {backoff_s:.0f}s "
                f"(restart {self.restarts[name]})"
            )
            if self._stop.wait(backoff_s):
                return
            self._spawn(name, args)

    def wait(self, on_hangup: list[str] | None = None) -> str | None:
        """Block until a signal arrives or a child crash-loops; the name of that child.

        SIGHUP runs ``on_hangup`` (``hub reload``) beside the children, if given.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        if on_hangup:
            signal.signal(signal.SIGHUP, lambda *_: self._run_beside(on_hangup))
        self._stop.wait()
        return self.crash_looping

    def _run_beside(self, args: list[str]) -> None:
        # On a thread, not in the handler: the command takes a second or more.
        run = threading.Thread(target=subprocess.run, args=(args,), kwargs={"env": self.env})
        run.daemon = True
        run.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child (Celery warm shutdown), SIGKILL what is left after the timeout."""
        self._stop.set()
        with self._lock:
            processes = list(self.children.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _say(message: str) -> None:
    print(f"hub: {message}", file=sys.stderr, flush=True)


def hub_command(*args: str) -> list[str]:
    """The argv of a ``hub`` subcommand run with this interpreter."""
    return [sys.executable, "-m", "hub", *args]


def child_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **overrides}
