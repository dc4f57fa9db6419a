"""What one worker process keeps for its lifetime.

Settings, compiled templates, the channels with their pooled clients, and one
asyncio event loop that the channels' async clients live on. The task's own
thread drives the loop for each batch (a prefork worker runs one task at a
time), so no hand-off to another thread sits on the hot path. Built lazily in
each process after fork, closed at worker shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis

from hub import events, logs
from hub.channels.base import Channel
from hub.circuit import circuit_breakers
from hub.errors import ConfigError
from hub.middleware import Middleware, default_middleware
from hub.middleware.announcer import Publish
from hub.ratelimit import RedisRateLimiter
from hub.reloads import VersionWatch, adopt, fresh_settings
from hub.routing import check_subscriptions
from hub.settings import Settings, get_settings
from hub.store.db import session
from hub.templates import Library, Templates

log = logging.getLogger(__name__)

T = TypeVar("T")


def build_providers(settings: Settings) -> dict[str, dict[str, Channel[Any]]]:
    """Every channel, one instance per provider in order; unconfigured ones write to the outbox."""
    outbox = settings.var_dir / "outbox"
    providers: dict[str, dict[str, Channel[Any]]] = {}
    for name in settings.channel_classes:
        providers[name] = {}
        for provider in settings.channels.of(name).all_providers:
            channel = settings.channels.kind_of(name, provider)(provider, outbox / name)
            channel.allow_private_targets = settings.outbound.allow_private_targets
            providers[name][provider.name] = channel
    return providers


class Runtime:
    """Per-process resources shared by every task the process runs.

    ``publish`` is how delivery middleware publishes events back into the
    hub (the failure announcement), so delivery itself never imports events.
    """

    def __init__(self, settings: Settings, publish: Publish) -> None:
        self.settings = settings
        logs.configure(settings.logging.redact, settings)
        self.templates = Templates()
        self.library = Library(settings.templates.utm)
        with session(settings.resolved_database_url) as db:
            current = self.library.load(db)
        check_subscriptions(settings, self.templates, current.variants)
        self.providers = build_providers(settings)
        redis_client = _redis(settings)
        self.middleware: list[Middleware] = default_middleware(
            RedisRateLimiter(redis_client) if redis_client else None,
            circuit_breakers(settings.rate_limit_redis_url),
            publish,
        )
        self._loop = asyncio.new_event_loop()
        # Threads of a `--pool threads` worker take turns on the loop.
        self._turn = threading.Lock()
        try:
            for channel in self._all_channels():
                self.run(channel.start(), timeout_s=30)
        except BaseException:
            self.close()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coroutine`` on the process's loop; cancel it after ``timeout_s``."""
        with self._turn:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout_s))

    def close(self) -> None:
        for channel in self._all_channels():
            self.run(channel.close(), timeout_s=10)
        self._loop.close()

    def _all_channels(self) -> list[Channel[Any]]:
        return [channel for providers in self.providers.values() for channel in providers.values()]


def _redis(settings: Settings) -> redis.Redis | None:
    """Where rate limits and circuits are shared; None without Redis (circuits stay per process)."""
    url = settings.rate_limit_redis_url
    limited = [name for name in settings.channel_classes if settings.channels.of(name).rate_limit]
    if limited and not url:
        raise ConfigError(
            f"channels.{limited[0]}.rate_limit needs Redis: set redis_url (the broker is not Redis)"
        )
    return redis.Redis.from_url(url) if url else None


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_watch: VersionWatch | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after fork, never inherited).

    Rebuilt from fresh settings and templates when ``hub reload`` moved the
    settings' version, which is looked at once a second at most (:mod:`hub.reloads`).
    """
    global _runtime, _runtime_pid, _watch
    with _lock:
        if _runtime is None or _watch is None or _runtime_pid != os.getpid():
            _watch = VersionWatch(get_settings().resolved_database_url)
            _runtime, _runtime_pid = _first(_watch), os.getpid()
        elif (version := _watch.moved()) is not None:
            _runtime = _reloaded(_runtime, _watch, version)
        return _runtime


def _first(watch: VersionWatch) -> Runtime:
    """The process's first runtime, of the settings at the store's version.

    Loaded afresh, not inherited: a worker child forked after a reload must
    not run the settings its parent started with.
    """
    # Read before the settings are: a reload in between is seen next time, never missed.
    watch.version = watch.stored()
    watch.claim()
    try:
        settings = fresh_settings(get_settings())
    except ConfigError as exc:
        log.error("settings file broken since start-up, running the ones loaded then: %s", exc)
        settings = get_settings()
    adopt(settings)
    return Runtime(settings, events.publish)


def _reloaded(running: Runtime, watch: VersionWatch, version: int) -> Runtime:
    """A runtime of the settings at ``version``; ``running`` again if they are broken."""
    try:
        settings = fresh_settings(running.settings)
        runtime = Runtime(settings, events.publish)
    except ConfigError as exc:
        # `hub reload` refuses a broken file; this one was broken after it. Wait for the next.
        log.error("settings version %d not applied, still running the last ones: %s", version, exc)
        watch.version = version
        return running
    watch.version = version
    adopt(settings)
    running.close()
    log.info("settings version %d applied: settings and templates reloaded", version)
    return runtime


def close_runtime() -> None:
    """Close this process's runtime if it was built."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime_pid == os.getpid():
            _runtime.close()
        _runtime = None
