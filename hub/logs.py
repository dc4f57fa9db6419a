"""Every log line the hub writes, with recipients and secrets redacted.

Provider errors quote addresses ("550 <ada@example.com>: no such user"),
and a URL or token may end up in an exception's text, so redaction applies
to the formatted message of every record in the process, whoever logs it
(the hub, Celery, aiosmtplib): the record factory is wrapped once, at the
CLI's start. ``logging.redact = false`` turns it off for debugging.

What is masked: email addresses (``a***@example.com``), E.164 phone numbers
(``+*********00``), hub API keys, and every secret value of the settings.
Tracebacks are left as they are (they quote code, rarely data).

Lines are text for a terminal, or with ``logging.format = "json"`` one JSON
object per line (:class:`JsonFormatter`) carrying ``event_id`` and
``notification_id`` where the line is about one (``extra=ids(...)``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
_PHONE = re.compile(r"\+\d{6,13}(\d{2})\b")
_API_KEY = re.compile(r"\bhub_[A-Za-z0-9_-]{16,}")
# Shorter values (a test's "token") would mask ordinary words.
_MIN_SECRET_LENGTH = 8


class _Redaction:
    enabled = True
    secrets: frozenset[str] = frozenset()


def redact(text: str) -> str:
    """``text`` with recipients, API keys and known secrets masked."""
    text = _EMAIL.sub(r"\1***@\2", text)
    text = _PHONE.sub(lambda m: "+" + "*" * (len(m.group(0)) - 3) + m.group(1), text)
    text = _API_KEY.sub("hub_***", text)
    for secret in _Redaction.secrets:
        text = text.replace(secret, "***")
    return text


def install() -> None:
    """Redact every log record this process creates from now on (idempotent).

    Also quiets Alembic, which announces each plugin and step at INFO
    whenever a process checks or applies migrations.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _Redaction.enabled:
            message = record.getMessage()
            redacted = redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure(enabled: bool, settings: Any) -> None:
    """Turn redaction on or off, and learn the secret values held in ``settings``."""
    _Redaction.enabled = enabled
    _Redaction.secrets = frozenset(
        value for value in _secret_values(settings) if len(value) >= _MIN_SECRET_LENGTH
    )


def _secret_values(value: Any) -> Iterable[str]:
    # By shape, not by pydantic's classes: the CLI installs this module
    # before anything heavy is imported, to keep `hub --help` fast.
    if hasattr(value, "get_secret_value"):
        yield value.get_secret_value()
    elif hasattr(type(value), "model_fields"):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)


def ids(event_id: str | None = None, notification_id: str | None = None) -> dict[str, str]:
    """``extra=`` for a log line about one event or notification: JSON lines carry them."""
    found = {"event_id": event_id, "notification_id": notification_id}
    return {key: value for key, value in found.items() if value}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in ("event_id", "notification_id"):
            if value := getattr(record, key, None):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``logging.format``: ``json`` or ``text``."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def use_format(kind: str, handlers: Iterable[logging.Handler] = ()) -> None:
    """Format ``handlers`` (default: the root logger's) as ``kind``."""
    for handler in list(handlers) or logging.getLogger().handlers:
        handler.setFormatter(formatter(kind))


def uvicorn_config(kind: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` writing every line through :func:`formatter`."""
    factory = "hub.logs.JsonFormatter" if kind == "json" else "logging.Formatter"
    options = {} if kind == "json" else {"fmt": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "hub", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hub": {"()": factory, **options}},
        "handlers": {"hub": handler},
        "root": {"handlers": ["hub"], "level": "INFO"},
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
