"""Request limits enforced before a body is read: its size, and that a key was sent at all.

FastAPI reads and parses the whole body before any dependency runs, so a
200 MB body without a key used to be read into memory before its 401. This
ASGI middleware sits in front: a declared ``Content-Length`` over the limit
is answered 413 at once, whatever the key; a request to an authenticated
path without an ``Authorization`` header (or the web editor's session
cookie) gets its 401 before a byte of body is read; a body without a length
is read here up to the limit and cut there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hub.api.sessions import COOKIE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

BATCH_SUFFIX = ":batch"
# Signed instead of carrying a key: by their provider, or by the hub (hub.links).
UNAUTHENTICATED_PREFIXES = ("/v1/callbacks/", "/v1/unsubscribe/", "/v1/alerts/ack/")
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
MISSING_KEY = "missing or invalid API key: send Authorization: Bearer <key>"
# A session cookie is checked by hub.api.auth like a key; here only whether one was sent.
SESSION_COOKIE = f"{COOKIE}=".encode()


class RequestLimits:
    """Answers 413 for an oversized body and 401 for a keyless request, before reading either."""

    def __init__(self, app: App, max_body_bytes: int, max_batch_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_batch_body_bytes = max_batch_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        limit = self.max_batch_body_bytes if path.endswith(BATCH_SUFFIX) else self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if length > limit:
                await _too_large(send, path, limit)
                return
        credentials = headers.get(b"authorization") or SESSION_COOKIE in headers.get(b"cookie", b"")
        if _needs_key(path) and not credentials:
            await _answer(send, 401, MISSING_KEY, {"www-authenticate": "Bearer"})
            return
        if declared is None and scope["method"] not in BODYLESS:
            await self._buffered(scope, receive, send, limit)
            return
        await self.app(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read a body of unknown length up to ``limit``, then hand it on whole.

        Counting inside the application instead would not do: FastAPI turns
        any error while it reads a body into a 400.
        """
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await _too_large(send, scope["path"], limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _needs_key(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(UNAUTHENTICATED_PREFIXES)


async def _too_large(send: Send, path: str, limit: int) -> None:
    setting = "api.max_batch_body_bytes" if path.endswith(BATCH_SUFFIX) else "api.max_body_bytes"
    await _answer(send, 413, f"request body larger than {limit} bytes ({setting})")


async def _answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The unread rest of the body makes the connection unusable for another request.
        (b"connection", b"close"),
        *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
