"""Run the hub's processes side by side for ``hub up`` and stop them together."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies."""
    # Linux: the child gets SIGTERM if `hub up` itself dies, even by SIGKILL,
    # so no worker or server is ever orphaned.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervisor:
    """Starts named child processes; :meth:`wait` returns when one exits or on a signal."""

    env: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, env=self.env, preexec_fn=die_with_parent)
        self.children[name] = process
        threading.Thread(target=self._watch, args=(process,), daemon=True).start()
        return process

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self._stop.set()

    def wait(self) -> str | None:
        """Block until a signal arrives or a child exits; the name of a child that died."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        self._stop.wait()
        for name, process in self.children.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child (Celery warm shutdown), SIGKILL what is left after the timeout."""
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.children.values():
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def hub_command(*args: str) -> list[str]:
    """The argv of a ``hub`` subcommand run with this interpreter."""
    return [sys.executable, "-m", "hub", *args]


def child_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **overrides}
