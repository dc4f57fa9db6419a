"""API keys on requests: ``Authorization: Bearer <key>``, checked against stored hashes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import keys

# The dependency a route lists to require a valid key.
Authenticated = Callable[..., Awaitable[None]]


class _KeyCache:
    """Valid key hashes seen recently, so a publish costs no key lookup."""

    ttl_s = 60.0

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._seen: dict[str, float] = {}

    async def check(self, key: str) -> bool:
        digest = keys.hash_key(key)
        if self._seen.get(digest, 0.0) > time.monotonic():
            return True
        if not await run_in_threadpool(keys.is_valid, self._database_url, key):
            return False
        self._seen[digest] = time.monotonic() + self.ttl_s
        return True


_bearer = HTTPBearer(auto_error=False)


def authentication(database_url: str) -> Authenticated:
    """A FastAPI dependency that answers 401 unless the request carries a valid key."""
    key_cache = _KeyCache(database_url)

    async def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or not await key_cache.check(credentials.credentials):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authenticated
