"""What one worker process keeps for its lifetime.

Settings, compiled templates, the channels with their pooled clients, and one
asyncio event loop (in a daemon thread) that the channels' async clients live
on. Built lazily in each process after fork, closed at worker shutdown.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from hub.channels import Channel, EmailChannel
from hub.settings import Settings, get_settings
from hub.templates import Templates

T = TypeVar("T")


def build_channels(settings: Settings) -> dict[str, Channel]:
    """Every channel, configured from settings."""
    outbox = settings.var_dir / "outbox"
    return {"email": EmailChannel(settings.channels.email, outbox / "email")}


class Runtime:
    """Per-process resources shared by every task the process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = Templates(settings.all_template_dirs)
        self.channels = build_channels(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hub-io", daemon=True)
        self._thread.start()
        for channel in self.channels.values():
            self.run(channel.start(), timeout_s=30)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coroutine`` on the process's loop; cancel it after ``timeout_s``."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        for channel in self.channels.values():
            self.run(channel.close(), timeout_s=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after fork, never inherited)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime, _runtime_pid = Runtime(get_settings()), os.getpid()
        return _runtime


def close_runtime() -> None:
    """Close this process's runtime if it was built."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime_pid == os.getpid():
            _runtime.close()
        _runtime = None
