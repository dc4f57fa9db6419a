"""Signing and verifying the hub's outgoing webhooks, for the hub and for receivers.

The webhook channel sends the raw JSON body with an ``X-Hub-Signature`` header::

    X-Hub-Signature: t=1718000000,v1=<64 hex digits>

``v1`` is the hex HMAC-SHA256 of ``f"{t}.".encode() + body`` under the shared
secret, so the timestamp is signed too and an old request cannot be replayed
with a fresh ``t``. While a secret is being rotated a header may carry several
``v1=`` values; one match is enough.

A receiver verifies the exact bytes it was sent (before parsing them), then
drops deliveries it has already seen by the body's ``notification_id``, since
the hub delivers at least once. Deduplicate on the body, which the signature
covers, never on the ``X-Hub-Delivery`` header (the same id, but unsigned: a
forger replaying a signed body under a new header would get it handled twice)::

    from fastapi import FastAPI, HTTPException, Request
    from hub.webhooks import InvalidSignature, verify

    app = FastAPI()

    @app.post("/hooks/hub")
    async def hub_hook(request: Request) -> dict[str, str]:
        body = await request.body()
        try:
            verify(SECRET, body, request.headers.get("X-Hub-Signature", ""))
        except InvalidSignature as exc:
            raise HTTPException(400, str(exc)) from exc
        payload = json.loads(body)
        if not already_handled(payload["notification_id"]):
            handle(payload)
        return {"id": payload["notification_id"]}
"""

from __future__ import annotations

import hashlib
import hmac
import time

from hub.errors import InvalidSignature

SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Hub-Delivery"
DEFAULT_TOLERANCE_S = 300


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Hub-Signature`` value for ``body``: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def _parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and every ``v1`` value of a header; unknown keys are ignored."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise InvalidSignature(f"malformed signature header item {item!r}", "malformed")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise InvalidSignature("malformed signature timestamp", "malformed")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature("signature header needs t= and at least one v1=", "malformed")
    return timestamp, signatures


def verify(
    secret: str,
    body: bytes,
    header: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check ``header`` signs ``body`` under ``secret`` within ``tolerance_s`` of ``now``.

    Raises :class:`InvalidSignature`; returns nothing when the request is authentic.
    """
    timestamp, signatures = _parse(header)
    expected = _digest(secret, timestamp, body)
    # Constant-time comparison, on bytes: compare_digest refuses non-ASCII str.
    if not any(hmac.compare_digest(expected.encode(), v1.encode()) for v1 in signatures):
        raise InvalidSignature("signature does not match the body", "mismatch")
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance_s:
        raise InvalidSignature(
            f"signature timestamp is {skew:+.0f}s from now (tolerance {tolerance_s}s)", "expired"
        )
