"""The API's side of ``hub reload``: an ASGI middleware that follows the settings' version.

Before a request, at most once a second, it reads the version in the store
(on a thread: the event loop must not wait on the store); when it moved, the
process adopts freshly loaded settings, so the next publish is validated
against the new event catalog. What the app was built from at start-up (its
routes' settings, limits, keys) stays: those keys need a restart
(:data:`hub.settings.snapshot.NEEDS_RESTART`).
"""

from __future__ import annotations

import asyncio
import logging

from hub.api.limits import App, Receive, Scope, Send
from hub.errors import ConfigError
from hub.reloads import VersionWatch, adopt, fresh_settings
from hub.settings import get_settings

log = logging.getLogger(__name__)


def started(database_url: str) -> VersionWatch:
    """The version this process starts at, its settings loaded after reading it."""
    watch = VersionWatch(database_url)
    # Read before the settings are: a reload in between is seen next time, never missed.
    watch.version = watch.stored()
    watch.claim()
    adopt(fresh_settings(get_settings()))
    return watch


class FollowReloads:
    """Applies a ``hub reload`` before the first request that comes after it."""

    def __init__(self, app: App, watch: VersionWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.watch.claim():
            await asyncio.to_thread(self._follow)
        await self.app(scope, receive, send)

    def _follow(self) -> None:
        found = self.watch.stored()
        if found is None or found == self.watch.version:
            return
        try:
            adopt(fresh_settings(get_settings()))
        except ConfigError as exc:
            # `hub reload` refuses a broken file; this one was broken after it.
            log.error("settings version %d not applied, running the last ones: %s", found, exc)
        else:
            log.info("settings version %d applied: event catalog reloaded", found)
        self.watch.version = found
