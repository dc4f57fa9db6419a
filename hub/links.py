"""Signed links: URLs the hub sends that act without an API key (unsubscribe).

A token is ``<payload>.<mac>``, both base64url without padding: the payload
is the JSON list of the fields the link is about (a recipient id and a
category), the mac is HMAC-SHA256 over the link's purpose and the payload.
The purpose is signed, so a token made for one kind of link never works as
another; the fields are signed, so changing one character of either part
makes the token invalid. Tokens do not expire: an unsubscribe link must work
in an email read months later, and using it twice does what it did once.

The key is ``secret_key`` (``HUB_SECRET_KEY``), else a random one kept in
``<var_dir>/secret-key`` (0600), made by whichever process needs it first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hub.errors import ConfigError
from hub.settings import Settings

UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBE_PATH = "/v1/unsubscribe/"
KEY_FILE = "secret-key"
# Anything longer is no token of ours (a 200-character id and category make ~600).
MAX_TOKEN_CHARS = 2000


def sign(key: bytes, purpose: str, fields: Sequence[str]) -> str:
    """A URL-safe token for ``fields``, good only for ``purpose`` under ``key``."""
    payload = _b64(json.dumps(list(fields), separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, purpose, payload))}"


def verify(key: bytes, purpose: str, token: str) -> list[str] | None:
    """The fields ``token`` was signed with for ``purpose``; None for any token not ours."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return None
    payload, mac = token.split(".")
    # Compared as text: two spellings of one mac (base64's spare bits) are not both valid.
    if not hmac.compare_digest(mac.encode(), _b64(_mac(key, purpose, payload)).encode()):
        return None
    try:
        fields = json.loads(_unb64(payload))
    except ValueError:  # base64, UTF-8 and JSON errors all are
        return None
    if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        return None
    return fields


def unsubscribe_url(settings: Settings, recipient_id: str, category: str) -> str:
    """The one-click link that turns ``category`` off for ``recipient_id``."""
    token = sign(secret_key(settings), UNSUBSCRIBE, [recipient_id, category])
    # The token's characters are all unreserved in a URL: nothing to escape.
    return f"{settings.api.base_url}{UNSUBSCRIBE_PATH}{token}"


def read_unsubscribe(settings: Settings, token: str) -> tuple[str, str] | None:
    """``(recipient id, category)`` of an unsubscribe token; None if forged or malformed."""
    fields = verify(secret_key(settings), UNSUBSCRIBE, token)
    if fields is None or len(fields) != 2:
        return None
    return fields[0], fields[1]


ACK = "ack"
ACK_PATH = "/v1/alerts/ack/"


def ack_url(settings: Settings, alert_id: str) -> str:
    """The signed link that acknowledges alert group ``alert_id`` (GET shows, POST acts)."""
    return f"{settings.api.base_url}{ACK_PATH}{sign(secret_key(settings), ACK, [alert_id])}"


def read_ack(settings: Settings, token: str) -> str | None:
    """The alert group id of an ack token; None if forged or malformed."""
    fields = verify(secret_key(settings), ACK, token)
    return fields[0] if fields is not None and len(fields) == 1 else None


def secret_key(settings: Settings) -> bytes:
    """The key links are signed with: ``secret_key``, else the one kept under ``var_dir``."""
    configured = settings.secret_key.get_secret_value()
    if configured:
        return configured.encode()
    return _kept_key(settings.var_dir.resolve() / KEY_FILE)


@cache
def _kept_key(path: Path) -> bytes:
    """The key in ``path``, made first if missing; every process that shares the folder agrees.

    A new key is written whole to a file of its own and then linked into
    place, which fails if another process got there first: no process can
    read a half-written key, and the loser reads the winner's.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as draft_file:
            draft_file.write(secrets.token_hex(32))
        # Another process's key, linked first, wins: this one is dropped.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ConfigError(f"{path} holds no usable key: delete it to make a new one")
    return key


def _mac(key: bytes, purpose: str, payload: str) -> bytes:
    # The purpose and a separator first: no payload can pass for another purpose's.
    return hmac.new(key, f"{purpose}\x00{payload}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # validate=True: characters outside the alphabet make it invalid instead of being dropped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
