"""What `hub reload` compares: the settings and template files, as one flat JSON object.

A snapshot maps a key to a JSON value. Settings keys are dotted paths
(``channels.email.rate_limit``); an event type is one key
(``events."order.shipped"``), and so is the list of subscriptions
(``subscriptions``); a template file is a key of its own
(``templates: user.registered/subject.txt``) holding its content's hash,
from the folder that wins (the first of the template dirs that has it).

Secrets never reach the store in clear: a ``SecretStr``, or the password of
a URL, is kept as a slow, salted fingerprint, enough to tell that it changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from hub.template_files import winning_folders

Snapshot = dict[str, Any]

# What a running process cannot change, so a change waits for its restart:
# the broker, store and Redis it connected to, where it keeps local state,
# the channel classes whose queues it declared, the key its links are signed
# with, everything the API builds its app from at start-up, and the beat
# schedule. A key is matched with everything under it. Everything else (the
# catalog, subscriptions, templates, channels with their rate limits,
# delivery policy, logging, outbound checks) applies to the next task or
# request. Top-level keys listed here keep their running values in a
# process that reloads (:func:`restart_fields`).
NEEDS_RESTART = (
    "broker_url",
    "redis_url",
    "database_url",
    "var_dir",
    "embedded_redis_port",
    "extra_channels",
    "secret_key",
    "api",
    "delivery.sweep_interval_s",
    "scheduling.release_interval",
    "alerts.tick_s",
)
TEMPLATES = "templates: "
# Its entries are one key each, however deep they nest.
_WHOLE_ENTRIES = {"events"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# PBKDF2: a fingerprint of a weak SMTP password must not be cheap to guess.
_SALT = b"hub settings snapshot"
_ROUNDS = 20_000


@dataclass(frozen=True, slots=True)
class Change:
    """One key whose value differs between two snapshots."""

    key: str
    applies_now: bool

    def __str__(self) -> str:
        return f"{self.key}: {'applies now' if self.applies_now else 'needs a restart'}"


def needs_restart(key: str) -> bool:
    """Whether a change to ``key`` waits for the processes' restart (see :data:`NEEDS_RESTART`)."""
    return any(key == root or key.startswith(f"{root}.") for root in NEEDS_RESTART)


def restart_fields() -> list[str]:
    """The top-level settings a reloading process keeps as it started with them."""
    return [root for root in NEEDS_RESTART if "." not in root]


def snapshot(settings: BaseModel, template_dirs: list[Path]) -> Snapshot:
    """The snapshot of ``settings`` (validated) and the template files they use."""
    found: Snapshot = {}
    _flatten("", _jsonable(settings.model_dump()), found)
    found.update(_templates(template_dirs))
    return found


def changes(old: Snapshot, new: Snapshot) -> list[Change]:
    """Every key added, removed or changed from ``old`` to ``new``; templates last."""
    missing = object()
    keys = sorted(old.keys() | new.keys(), key=lambda key: (key.startswith(TEMPLATES), key))
    return [
        Change(key, not needs_restart(key))
        for key in keys
        if old.get(key, missing) != new.get(key, missing)
    ]


def _flatten(prefix: str, value: Any, found: Snapshot) -> None:
    if not (isinstance(value, dict) and value):
        found[prefix] = value
        return
    whole = prefix in _WHOLE_ENTRIES
    for key, item in value.items():
        name = key if _BARE_KEY.match(key) else json.dumps(key)
        path = f"{prefix}.{name}" if prefix else name
        if whole:
            found[path] = item
        else:
            _flatten(path, item, found)


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _fingerprint(value.get_secret_value())
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, str):
        return _without_password(value)
    return to_jsonable_python(value)


def _without_password(value: str) -> str:
    """A URL's password (``amqp://hub:secret@host``) replaced by its fingerprint."""
    if "://" not in value or "@" not in value:
        return value
    try:
        password = urlsplit(value).password
    except ValueError:
        return value
    if not password:
        return value
    return value.replace(f":{password}@", f":{_fingerprint(password)}@", 1)


def _fingerprint(secret: str) -> str:
    if not secret:
        return ""
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(errors="surrogatepass"), _SALT, _ROUNDS)
    return f"pbkdf2:{digest.hex()[:32]}"


def _templates(dirs: list[Path]) -> Snapshot:
    """A SHA-256 per template file, each folder from the first of ``dirs`` that has it."""
    found: Snapshot = {}
    for folder in winning_folders(dirs):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                name = path.relative_to(folder.parent).as_posix()
                found[TEMPLATES + name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
