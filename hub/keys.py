"""API keys: shown once when created, stored only as a SHA-256 hash, each with its scopes.

Scopes (CONVENTIONS.md, "Scopes"):

- ``publish:<glob>`` publishes the event types the glob matches (``fnmatch``:
  ``publish:user.*``, ``publish:*``);
- ``read`` reads: ``GET`` on events, notifications and channels;
- ``admin`` does everything else, and all that ``read`` and ``publish:*`` do.

A key may also expire, be revoked, and be kept to some networks. The Python
API makes ``admin`` keys unless told otherwise (the dev key, the tests' key);
``hub keys create`` gives :data:`DEFAULT_SCOPES`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.errors import InputError, NameTaken
from hub.store import keys as stored_keys
from hub.store.db import session
from hub.store.models import ApiKey, utcnow

# How a bearer JWT's holder is named (jwt:<sub>), never a stored key's name.
JWT_HOLDER = "jwt:"
PREFIX = "hub_"
ADMIN = "admin"
READ = "read"
PUBLISH = "publish:"
# What `hub keys create` gives without --scope: a service that publishes and checks on it.
DEFAULT_SCOPES = (f"{PUBLISH}*", READ)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Principal:
    """Whom a key belongs to and what it may do; never the key or its hash."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    # None: usable from anywhere.
    networks: tuple[Network, ...] | None = None

    def allows(self, scope: str) -> bool:
        """Whether the key holds ``scope``; ``admin`` holds them all."""
        return ADMIN in self.scopes or scope in self.scopes

    @property
    def publish_globs(self) -> tuple[str, ...]:
        """The event type globs of its ``publish:`` scopes (``("*",)`` for ``admin``)."""
        if ADMIN in self.scopes:
            return ("*",)
        return tuple(s.removeprefix(PUBLISH) for s in self.scopes if s.startswith(PUBLISH))

    def may_publish(self, event_type: str) -> bool:
        """Whether one of its ``publish:<glob>`` scopes (or ``admin``) matches ``event_type``."""
        return any(fnmatchcase(event_type, glob) for glob in self.publish_globs)

    def unusable(self, now: datetime) -> str | None:
        """Why the key cannot be used at ``now`` (``"revoked"``, ``"expired"``), or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None

    def allows_address(self, host: str | None) -> bool:
        """Whether a request from ``host`` (an IP address) may use the key."""
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False  # not an IP address (a Unix socket): no network matches
        # A dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` without repeats; :class:`InputError` naming the first that is no scope."""
    checked = tuple(dict.fromkeys(scopes))
    if not checked:
        raise InputError("a key needs a scope: admin, read or publish:<glob>")
    for scope in checked:
        glob = scope.removeprefix(PUBLISH)
        if scope in (ADMIN, READ) or (glob != scope and glob and not _has_space(glob)):
            continue
        raise InputError(
            f"unknown scope {scope!r}: expected admin, read or publish:<glob> (e.g. publish:user.*)"
        )
    return checked


def check_networks(networks: Iterable[str]) -> tuple[str, ...]:
    """Networks in CIDR form (``10.0.0.0/8``; a bare address is one host), normalised."""
    checked = []
    for network in networks:
        try:
            checked.append(str(ipaddress.ip_network(network.strip(), strict=False)))
        except ValueError:
            raise InputError(f"{network!r} is not an IP network like 10.0.0.0/8") from None
    return tuple(dict.fromkeys(checked))


def create_key(
    database_url: str,
    name: str,
    scopes: Iterable[str] = (ADMIN,),
    *,
    expires_in_s: float | None = None,
    networks: Iterable[str] = (),
) -> str:
    """Create a key named ``name`` and return it; only its hash is kept.

    ``expires_in_s``: None never expires. ``networks``: empty allows any address.
    """
    if name.startswith(JWT_HOLDER):
        # Tokens are named jwt:<sub>; a key of that name would share their rate limit.
        raise InputError(f"API key names cannot start with {JWT_HOLDER!r}: tokens are named so")
    key = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiKey(
        name=name,
        key_hash=hash_key(key),
        scopes=list(check_scopes(scopes)),
        allowed_networks=list(check_networks(networks)) or None,
        created_at=now,
        expires_at=None if expires_in_s is None else now + timedelta(seconds=expires_in_s),
    )
    try:
        with session(database_url) as db:
            stored_keys.add_api_key(db, row)
    except IntegrityError as exc:
        raise NameTaken(f"an API key named {name!r} already exists") from exc
    return key


def find_key(database_url: str, key_hash: str) -> Principal | None:
    """The key whose hash is ``key_hash``, revoked or expired ones too; None if there is none."""
    with session(database_url) as db:
        row = stored_keys.api_key_by_hash(db, key_hash)
        return None if row is None else _principal(row)


def is_valid(database_url: str, key: str) -> bool:
    """Whether ``key`` exists and is neither revoked nor expired."""
    principal = find_key(database_url, hash_key(key))
    return principal is not None and principal.unusable(utcnow()) is None


def list_keys(database_url: str) -> list[Principal]:
    """Every key, revoked ones too, oldest first."""
    with session(database_url) as db:
        return [_principal(row) for row in stored_keys.api_keys(db)]


def revoke_key(database_url: str, name: str) -> None:
    """Revoke the key named ``name``; API processes refuse it within seconds."""
    with session(database_url) as db:
        _live(db, name).revoked_at = utcnow()


def rotate_key(database_url: str, name: str) -> str:
    """Revoke the key named ``name`` and return its successor, made in the same transaction.

    The successor keeps the name, scopes and networks; a key that expires gets
    as long a lifetime again, from now.
    """
    key = PREFIX + secrets.token_urlsafe(32)
    with session(database_url) as db:
        old = _live(db, name)
        now = old.revoked_at = utcnow()
        db.flush()  # the name is unique among live keys: free it before the insert
        lifetime = None if old.expires_at is None else old.expires_at - old.created_at
        successor = ApiKey(
            name=name,
            key_hash=hash_key(key),
            scopes=list(old.scopes),
            allowed_networks=old.allowed_networks,
            created_at=now,
            expires_at=None if lifetime is None else now + lifetime,
        )
        stored_keys.add_api_key(db, successor)
    return key


def _live(db: Session, name: str) -> ApiKey:
    row = stored_keys.live_api_key(db, name)
    if row is None:
        raise InputError(f"no API key named {name!r} (or it is already revoked)")
    return row


def _principal(row: ApiKey) -> Principal:
    networks = row.allowed_networks
    return Principal(
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        networks=None if networks is None else tuple(ipaddress.ip_network(n) for n in networks),
    )


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)
