"""Who may call the API: ``Authorization: Bearer <key>``, the key's scopes and its rate limit.

Routes list one of :class:`Access`'s dependencies (scopes: :mod:`hub.keys`):

- ``read``: ``GET`` on events, notifications and channels;
- ``admin``: everything else (templates, retries, ...);
- ``publisher``: a key that may publish some event type. The route then
  checks each event's type: :func:`check_publish` answers 403 for one the
  key may not publish (a batch rejects such an item alone).

A missing, malformed, unknown, expired or revoked key gets 401; a key without
the scope, or used from outside its networks, 403; a key over
``api.rate_limit_per_key``, 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import keys
from hub.keys import Principal
from hub.ratelimit import RateLimiter, RedisRateLimiter, StubRateLimiter
from hub.settings import Rate, Settings
from hub.store.models import utcnow

# A dependency a route lists; it answers the caller's key holder.
Dependency = Callable[..., Awaitable[Principal]]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class _KeyCache:
    """Keys looked up recently, so a publish costs no lookup.

    A revoked key must stop on every API process within 5 s (CONVENTIONS.md),
    so each process asks the store about a key again once its answer is
    ``ttl_s`` old: one lookup per key every 2 s, shared by the requests that
    arrive meanwhile. Expiry needs no lookup; it is checked on every request.
    """

    ttl_s = 2.0

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._seen: dict[str, tuple[float, Principal]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(self, key: str) -> Principal | None:
        """The key's holder, revoked or expired too; None for a key that does not exist."""
        digest = keys.hash_key(key)
        seen = self._seen.get(digest)
        if seen is not None and seen[0] > time.monotonic():
            return seen[1]
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.ensure_future(self._look_up(digest))
        # Shielded: a client that hangs up must not cancel the lookup others wait on.
        return await asyncio.shield(lookup)

    async def _look_up(self, digest: str) -> Principal | None:
        try:
            principal = await run_in_threadpool(keys.find_key, self._database_url, digest)
        finally:
            del self._lookups[digest]
        if principal is None:
            # Only stored keys are kept: anyone can send any number of unknown ones.
            self._seen.pop(digest, None)
        else:
            self._seen[digest] = (time.monotonic() + self.ttl_s, principal)
        return principal


class _RateLimit:
    """``api.rate_limit_per_key``: a GCRA limit per key name (a rotated key keeps its count)."""

    def __init__(self, setting: str, limiter: RateLimiter) -> None:
        self._setting = setting
        self._rate = Rate.parse(setting)
        # "100/s" lets 100 requests through at once, then one every 10 ms.
        self._burst = max(int(self._rate.count), 1)
        self._limiter = limiter

    async def check(self, principal: Principal) -> None:
        """429 with ``Retry-After`` when the key is over its rate."""
        name = f"api-key:{principal.name}"
        wait_s = await run_in_threadpool(self._limiter.acquire, name, self._rate, self._burst)
        if wait_s > 0:
            retry_after = str(max(math.ceil(wait_s), 1))
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"API key {principal.name!r} is over api.rate_limit_per_key "
                f"({self._setting}); retry after {retry_after}s",
                headers={"Retry-After": retry_after},
            )


class Access:
    """The dependencies routes list: ``read``, ``admin`` and ``publisher``."""

    def __init__(self, database_url: str, rate_limit: _RateLimit | None = None) -> None:
        self._keys = _KeyCache(database_url)
        self._rate_limit = rate_limit
        self.read = self._requiring(keys.READ)
        self.admin = self._requiring(keys.ADMIN)
        self.publisher = self._publishing()

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """Keys in the settings' store, limited by ``api.rate_limit_per_key`` if set."""
        setting = settings.api.rate_limit_per_key
        if not setting:
            return cls(settings.resolved_database_url)
        url = settings.rate_limit_redis_url
        # Without Redis each API process counts on its own, so N processes
        # let a key through at up to N times the rate.
        limiter = (
            RedisRateLimiter(redis.Redis.from_url(url), prefix="hub:api-rate")
            if url
            else StubRateLimiter()
        )
        return cls(settings.resolved_database_url, _RateLimit(setting, limiter))

    async def principal(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """The holder of the request's key: 401, 403 (networks) or 429 otherwise."""
        key = credentials.credentials if credentials is not None else ""
        # A key without the prefix was never made here: no lookup for it.
        principal = await self._keys.principal(key) if key.startswith(keys.PREFIX) else None
        if principal is None:
            raise _unauthorized("missing or invalid API key: send Authorization: Bearer <key>")
        if problem := principal.unusable(utcnow()):
            raise _unauthorized(f"API key {principal.name!r} is {problem}")
        host = request.client.host if request.client else None
        if not principal.allows_address(host):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"API key {principal.name!r} may not be used from {host}"
            )
        if self._rate_limit is not None:
            await self._rate_limit.check(principal)
        return principal

    def _requiring(self, scope: str) -> Dependency:
        async def require(request: Request, credentials: Credentials) -> Principal:
            principal = await self.principal(request, credentials)
            if not principal.allows(scope):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"API key {principal.name!r} lacks the {scope!r} scope this needs",
                )
            return principal

        return require

    def _publishing(self) -> Dependency:
        async def publisher(request: Request, credentials: Credentials) -> Principal:
            principal = await self.principal(request, credentials)
            if not principal.publish_globs:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"API key {principal.name!r} lacks a publish:<glob> scope to publish with",
                )
            return principal

        return publisher


def publish_refusal(principal: Principal, event_type: str) -> str:
    """Why ``principal`` may not publish ``event_type``, naming the scope it would need."""
    globs = ", ".join(f"publish:{glob}" for glob in principal.publish_globs)
    return (
        f"API key {principal.name!r} may not publish {event_type!r}: it needs a scope "
        f"matching it, like publish:{event_type} (it has {globs})"
    )


def check_publish(principal: Principal, event_type: str) -> None:
    """403 unless ``principal``'s scopes let it publish ``event_type``."""
    if not principal.may_publish(event_type):
        raise HTTPException(status.HTTP_403_FORBIDDEN, publish_refusal(principal, event_type))


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )
