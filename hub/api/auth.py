"""Who may call the API: ``Authorization: Bearer <key or JWT>``, its scopes and its rate limit.

Routes list one of :class:`Access`'s dependencies (scopes: :mod:`hub.keys`):

- ``read``: ``GET`` on events, notifications, alerts and channels;
- ``admin``: everything else (templates, retries, silences, acks, ...);
- ``publisher``: a key that may publish some event type. The route then
  checks each event's type: :func:`check_publish` answers 403 for one the
  key may not publish (a batch rejects such an item alone).

A missing, malformed, unknown, expired or revoked key gets 401; a key without
the scope, or used from outside its networks, 403; a key over
``api.rate_limit_per_key``, 429 with ``Retry-After``.

With ``api.jwt`` set, a bearer token shaped like a JWT is verified instead
(signature, ``exp``, ``nbf``, ``iss``, ``aud``): its holder is ``jwt:<sub>``
and its scopes those of its ``scope`` (space-separated) or ``scp`` claim. One
that does not verify gets 401; the rest is as for a key.

A request without ``Authorization`` may carry the web editor's session cookie
instead (:mod:`hub.api.sessions`): its holder is the key the session was made
with, looked up again like a bearer key (revoked: 401). With a cookie, a
request other than ``GET``/``HEAD``/``OPTIONS`` also needs ``X-CSRF-Token``,
else 403. A bearer key or token, when sent, wins over the cookie.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import jwt
import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import keys
from hub.api.sessions import COOKIE, CSRF_HEADER, SAFE_METHODS, Sessions, UiSession
from hub.keys import Principal
from hub.ratelimit import RateLimiter, RedisRateLimiter, StubRateLimiter
from hub.settings import Rate, Settings
from hub.settings.models import JwtSettings
from hub.store.models import utcnow

# A dependency a route lists; it answers the caller's key holder.
Dependency = Callable[..., Awaitable[Principal]]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]

# What a token's holder is called: ``jwt:<sub>``.
JWT_PREFIX = keys.JWT_HOLDER
# Three base64url parts: header, claims and signature.
_JWT_SHAPE = re.compile(r"[\w-]+\.[\w-]+\.[\w-]+", re.ASCII)


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
        return await self.principal_by_hash(keys.hash_key(key))

    async def principal_by_hash(self, digest: str) -> Principal | None:
        """As :meth:`principal`, for the key whose hash is ``digest`` (a session's key)."""
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


class _Tokens:
    """``api.jwt``: bearer JWTs, verified against its issuer, audience and keys."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._algorithms = settings.allowed_algorithms
        self._secret = settings.secret.get_secret_value() if settings.secret else ""
        # Read once, here at start-up: a request never touches the file.
        key_set = JwtSettings.read_jwks(settings.jwks_file) if settings.jwks_file else None
        self._keys = {key.key_id: key for key in key_set.keys} if key_set else None

    @staticmethod
    def fits(token: str) -> bool:
        """Whether ``token`` is shaped like a JWT (an API key never is)."""
        return not token.startswith(keys.PREFIX) and _JWT_SHAPE.fullmatch(token) is not None

    def principal(self, token: str) -> Principal:
        """The token's holder, ``jwt:<sub>`` with its scopes; 401 unless it verifies."""
        try:
            key, algorithms = self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(_token_problem(exc)) from None
        return Principal(
            name=f"{JWT_PREFIX}{claims['sub']}",
            scopes=_token_scopes(claims),
            created_at=utcnow(),
        )

    def _key(self, token: str) -> tuple[Any, list[str]]:
        """The key that verifies ``token`` and the algorithms it may use."""
        if self._keys is None:
            return self._secret, self._algorithms
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        # A key verifies with its own algorithm only, whatever the token's header says.
        if key is None or key.algorithm_name not in self._algorithms:
            raise _unauthorized("bearer token names no key of api.jwt.jwks_file (kid)")
        return key.key, [key.algorithm_name]


def _token_problem(exc: jwt.InvalidTokenError) -> str:
    """Why a token was refused, in words of our own: PyJWT's may quote the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "bearer token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "bearer token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "bearer token is meant for another audience than api.jwt.audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "bearer token comes from another issuer than api.jwt.issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"bearer token lacks the {exc.claim!r} claim"
    return "invalid bearer token: its signature or form does not verify against api.jwt"


def _token_scopes(claims: dict[str, Any]) -> tuple[str, ...]:
    """Scopes from ``scope`` (space-separated) or ``scp`` (the same, or a list)."""
    granted = claims.get("scope", claims.get("scp", ""))
    if isinstance(granted, str):
        return tuple(granted.split())
    if isinstance(granted, list) and all(isinstance(scope, str) for scope in granted):
        return tuple(granted)
    raise _unauthorized("bearer token's scope claim is neither a string nor a list of strings")


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
                f"{_holder(principal)} is over api.rate_limit_per_key "
                f"({self._setting}); retry after {retry_after}s",
                headers={"Retry-After": retry_after},
            )


class Access:
    """The dependencies routes list: ``read``, ``admin`` and ``publisher``."""

    def __init__(
        self,
        database_url: str,
        rate_limit: _RateLimit | None = None,
        jwt_settings: JwtSettings | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self._keys = _KeyCache(database_url)
        self._rate_limit = rate_limit
        self._tokens = _Tokens(jwt_settings) if jwt_settings else None
        # None: the session cookie is not accepted (only bearer keys and tokens).
        self.sessions = sessions
        self.read = self._requiring(keys.READ)
        self.admin = self._requiring(keys.ADMIN)
        self.publisher = self._publishing()

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """Keys in the settings' store, JWTs with ``api.jwt``; ``api.rate_limit_per_key`` if set."""
        setting = settings.api.rate_limit_per_key
        sessions = Sessions.from_settings(settings)
        if not setting:
            return cls(settings.resolved_database_url, None, settings.api.jwt, sessions)
        url = settings.rate_limit_redis_url
        # Without Redis each API process counts on its own, so N processes
        # let a key through at up to N times the rate.
        limiter = (
            RedisRateLimiter(redis.Redis.from_url(url), prefix="hub:api-rate")
            if url
            else StubRateLimiter()
        )
        return cls(
            settings.resolved_database_url, _RateLimit(setting, limiter), settings.api.jwt, sessions
        )

    async def principal(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """The holder of the request's key, token or session: 401, 403 (networks, CSRF) or 429."""
        bearer = credentials.credentials if credentials is not None else ""
        session = self._session(request) if credentials is None else None
        if session is not None:
            principal = await self._session_holder(request, session)
        elif credentials is None and self.sessions and COOKIE in request.cookies:
            raise _unauthorized("the editor session has expired or is invalid: log in again")
        elif self._tokens is not None and self._tokens.fits(bearer):
            principal = self._tokens.principal(bearer)
        else:
            principal = await self._key_holder(bearer)
        host = request.client.host if request.client else None
        if not principal.allows_address(host):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{_holder(principal)} may not be used from {host}"
            )
        if self._rate_limit is not None:
            await self._rate_limit.check(principal)
        return principal

    async def login(self, key: str) -> Principal:
        """The holder of ``key`` if it may open a web editor session: 401, or 403 without admin."""
        principal = await self._key_holder(key)
        if not principal.allows(keys.ADMIN):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{_holder(principal)} lacks the 'admin' scope the editor needs",
            )
        return principal

    async def page_holder(self, request: Request) -> Principal | None:
        """The admin behind a page request's session cookie; None to send it to the login."""
        session = self._session(request)
        if session is None:
            return None
        principal = await self._keys.principal_by_hash(session.key_hash)
        if principal is None or principal.unusable(utcnow()) or not principal.allows(keys.ADMIN):
            return None
        host = request.client.host if request.client else None
        return principal if principal.allows_address(host) else None

    def _session(self, request: Request) -> UiSession | None:
        """The request's valid session, if it has one (and sessions are accepted here)."""
        cookie = request.cookies.get(COOKIE)
        if self.sessions is None or cookie is None:
            return None
        return self.sessions.read(cookie)

    async def _session_holder(self, request: Request, session: UiSession) -> Principal:
        """The key behind ``session``: 401 once it is revoked, 403 on a write without CSRF."""
        assert self.sessions is not None
        principal = await self._keys.principal_by_hash(session.key_hash)
        if principal is None or principal.name != session.key_name:
            raise _unauthorized("the session's API key no longer exists: log in again")
        if problem := principal.unusable(utcnow()):
            raise _unauthorized(f"the session's API key {principal.name!r} is {problem}")
        token = request.headers.get(CSRF_HEADER)
        if request.method not in SAFE_METHODS and not self.sessions.csrf_ok(session, token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
        return principal

    async def _key_holder(self, key: str) -> Principal:
        """The holder of API key ``key``: 401 unless it exists and is usable."""
        # A key without the prefix was never made here: no lookup for it.
        principal = await self._keys.principal(key) if key.startswith(keys.PREFIX) else None
        if principal is None:
            raise _unauthorized("missing or invalid API key: send Authorization: Bearer <key>")
        if problem := principal.unusable(utcnow()):
            raise _unauthorized(f"API key {principal.name!r} is {problem}")
        return principal

    def _requiring(self, scope: str) -> Dependency:
        async def require(request: Request, credentials: Credentials) -> Principal:
            principal = await self.principal(request, credentials)
            if not principal.allows(scope):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"{_holder(principal)} lacks the {scope!r} scope this needs",
                )
            return principal

        return require

    def _publishing(self) -> Dependency:
        async def publisher(request: Request, credentials: Credentials) -> Principal:
            principal = await self.principal(request, credentials)
            if not principal.publish_globs:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"{_holder(principal)} lacks a publish:<glob> scope to publish with",
                )
            return principal

        return publisher


def publish_refusal(principal: Principal, event_type: str) -> str:
    """Why ``principal`` may not publish ``event_type``, naming the scope it would need."""
    globs = ", ".join(f"publish:{glob}" for glob in principal.publish_globs)
    return (
        f"{_holder(principal)} may not publish {event_type!r}: it needs a scope "
        f"matching it, like publish:{event_type} (it has {globs})"
    )


def check_publish(principal: Principal, event_type: str) -> None:
    """403 unless ``principal``'s scopes let it publish ``event_type``."""
    if not principal.may_publish(event_type):
        raise HTTPException(status.HTTP_403_FORBIDDEN, publish_refusal(principal, event_type))


def _holder(principal: Principal) -> str:
    """How an answer names the caller: ``API key 'ci'`` or ``token 'jwt:alice'``."""
    kind = "token" if principal.name.startswith(JWT_PREFIX) else "API key"
    return f"{kind} {principal.name!r}"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )
