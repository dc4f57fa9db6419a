"""List cursors: where the next page starts, as ``(created_at, id)``, opaque to clients."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from fastapi.exceptions import RequestValidationError


def encode_cursor(after: tuple[datetime, str]) -> str:
    """base64url of ``[created_at, id]``."""
    raw = json.dumps([after[0].isoformat(), after[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position ``cursor`` names; 422 ``invalid_cursor`` for one this API did not give."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        return datetime.fromisoformat(at), str(row_id)
    except (binascii.Error, ValueError, TypeError):
        # As FastAPI's own 422: its handler escapes input a message may quote.
        raise RequestValidationError(
            [
                {
                    "type": "invalid_cursor",
                    "loc": ["query", "cursor"],
                    "msg": "not a cursor this API gave; pass next_cursor from the previous page",
                }
            ]
        ) from None
