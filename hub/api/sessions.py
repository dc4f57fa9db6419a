"""Sessions of the web editor: an admin key exchanged for a signed cookie.

The cookie is a :func:`hub.links.sign` token (purpose ``ui-session``) over
``[session id, key name, key hash, expiry]``. Nothing is kept on the server:
the signature makes it unforgeable, the expiry ends it after
``LIFETIME_S``, and the key hash lets every request look the key up again
(through the API's key cache), so revoking or rotating the key ends its
sessions within seconds. The hash is of a random 256-bit key and the cookie
is ``HttpOnly``: it gives a reader nothing the cookie itself does not.

Writes with a session need ``X-CSRF-Token``: an HMAC of the session id, put
in the editor's page, which another site can neither read nor compute.
``SameSite=Strict`` already keeps the cookie off other sites' requests; the
token is the second lock, for browsers and proxies that get that wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.responses import Response

from hub import links
from hub.settings import Settings

COOKIE = "hub_session"
CSRF_HEADER = "X-CSRF-Token"
PURPOSE = "ui-session"
_CSRF_PURPOSE = b"ui-csrf\x00"
# A working day: long enough to edit, short enough that a stolen cookie dies.
LIFETIME_S = 12 * 3600
# Methods that never act; every other one needs the CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class UiSession:
    """One login: whose key, until when."""

    id: str
    key_name: str
    key_hash: str
    expires_at: float  # Unix time, seconds


class Sessions:
    """Issues, reads and ends session cookies; derives their CSRF tokens."""

    def __init__(self, key: bytes, secure: bool, lifetime_s: int = LIFETIME_S) -> None:
        self._key = key
        self._secure = secure
        self._lifetime_s = lifetime_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Sessions:
        """Signed with ``secret_key``; ``Secure`` cookies when ``api.public_url`` is https."""
        secure = settings.api.base_url.startswith("https://")
        return cls(links.secret_key(settings), secure)

    def issue(self, key_name: str, key_hash: str) -> tuple[str, UiSession]:
        """A new session for the key; the cookie value and what it says."""
        session = UiSession(
            id=secrets.token_urlsafe(16),
            key_name=key_name,
            key_hash=key_hash,
            expires_at=float(int(time.time()) + self._lifetime_s),
        )
        fields = [session.id, key_name, key_hash, str(int(session.expires_at))]
        return links.sign(self._key, PURPOSE, fields), session

    def read(self, cookie: str | None) -> UiSession | None:
        """The session of a cookie; None for one that is missing, forged, malformed or expired."""
        fields = links.verify(self._key, PURPOSE, cookie) if cookie else None
        if fields is None or len(fields) != 4 or not fields[3].isdigit():
            return None
        session = UiSession(fields[0], fields[1], fields[2], float(fields[3]))
        return session if session.expires_at > time.time() else None

    def csrf_token(self, session: UiSession) -> str:
        """The token writes with this session must carry in ``X-CSRF-Token``."""
        mac = hmac.new(self._key, _CSRF_PURPOSE + session.id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def csrf_ok(self, session: UiSession, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(
            token.encode(), self.csrf_token(session).encode()
        )

    def set_cookie(self, response: Response, cookie: str) -> None:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=self._lifetime_s,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path="/", secure=self._secure, httponly=True, samesite="strict"
        )
