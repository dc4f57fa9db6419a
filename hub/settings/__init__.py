"""The one settings object: ``settings.toml`` overridden by ``HUB_...`` env vars.

The file is ``$HUB_SETTINGS`` or ``./settings.toml``; with neither, the
``settings.toml`` bundled in the package. Nested keys map to env vars with a
double underscore: ``channels.email.host`` is ``HUB_CHANNELS__EMAIL__HOST``.
Env vars win over the file. Unknown keys and wrong types stop start-up with a
:class:`~hub.errors.ConfigError` naming the key and the file (and line) or env var.

Settings sit at the bottom of the import graph: they import only the errors
and the channel registry, which names channel classes by import path; each
channel's section is validated by the settings model its module declares.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from hub.channels import channel_classes
from hub.errors import ConfigError
from hub.settings.models import (
    AlertsSettings,
    ApiSettings,
    BeatSettings,
    BundledSettings,
    ChannelSettings,
    ChannelsSettings,
    DeliverySettings,
    EventType,
    LoggingSettings,
    OutboundSettings,
    RetentionSettings,
    SchedulingSettings,
    StatusWebhookSettings,
    Subscription,
    TemplateSettings,
    WorkerSettings,
    section_model,
)
from hub.settings.report import ENV_PREFIX, describe, describe_env_error
from hub.settings.units import DURATION_UNITS_MS, MAX_DURATION_S, Rate, parse_duration

if TYPE_CHECKING:
    from hub.channels.base import Channel

# In a subscription, every configured alert channel (Slack, webhook, Apprise).
ALERT = "alert"

__all__ = [
    "ALERT",
    "DURATION_UNITS_MS",
    "ENV_PREFIX",
    "MAX_DURATION_S",
    "AlertsSettings",
    "ApiSettings",
    "BeatSettings",
    "BundledSettings",
    "ChannelSettings",
    "ChannelsSettings",
    "DeliverySettings",
    "LoggingSettings",
    "TemplateSettings",
    "WorkerSettings",
    "OutboundSettings",
    "RetentionSettings",
    "SchedulingSettings",
    "StatusWebhookSettings",
    "EventType",
    "Rate",
    "Settings",
    "Subscription",
    "bundled_path",
    "get_settings",
    "load_settings",
    "parse_duration",
    "settings_class",
    "settings_path",
    "use_settings",
]


class Settings(BaseSettings):
    """Everything the hub can be told. Built once per process by :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    broker_url: str = Field("", description="Empty: `hub up` starts an embedded redis-server")
    redis_url: str = Field("", description="Redis for rate limits; empty: the broker if Redis")
    database_url: str = Field("", description="Empty: SQLite at <var_dir>/hub.db")
    var_dir: Path = Path("var")
    # Where `hub up`'s embedded redis-server listens: the same address at every
    # start, so send_task publishers keep working (not 6379, a system Redis's).
    embedded_redis_port: int = Field(6390, ge=1, le=65535)
    template_dirs: list[Path] = Field(default_factory=list)
    # More channel classes, as "module:Class" (installed plugins register themselves).
    extra_channels: list[str] = Field(default_factory=list)
    # Which bundled entries (event types, subscriptions, templates) a user's file keeps.
    bundled: BundledSettings = BundledSettings()
    api: ApiSettings = ApiSettings()
    delivery: DeliverySettings = DeliverySettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    alerts: AlertsSettings = AlertsSettings()
    worker: WorkerSettings = WorkerSettings()
    outbound: OutboundSettings = OutboundSettings()
    retention: RetentionSettings = RetentionSettings()
    beat: BeatSettings = BeatSettings()
    # Receivers of notification status changes (hub.status_webhooks).
    status_webhooks: list[StatusWebhookSettings] = Field(default_factory=list)
    logging: LoggingSettings = LoggingSettings()
    templates: TemplateSettings = TemplateSettings()
    channels: ChannelsSettings = ChannelsSettings()
    events: dict[str, EventType] = Field(default_factory=dict)
    subscriptions: list[Subscription] = Field(default_factory=list)
    # Signs the links the hub sends (hub.links); empty: a random key kept in
    # <var_dir>/secret-key. Replicas must share it: set HUB_SECRET_KEY.
    secret_key: SecretStr = SecretStr("")

    @field_validator("secret_key")
    @classmethod
    def _long_secret(cls, secret: SecretStr) -> SecretStr:
        # As long as the HMAC's hash, or links could be forged by guessing it (RFC 2104, 3).
        if secret.get_secret_value() and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("a secret key needs at least 32 bytes (openssl rand -hex 32)")
        return secret

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; env vars must beat them.
        return (env_settings, init_settings)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'hub.db').resolve()}"

    @property
    def rate_limit_redis_url(self) -> str:
        """Where rate limits live: ``redis_url``, else the broker when it is Redis."""
        broker = self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else ""
        return self.redis_url or broker

    @property
    def channel_classes(self) -> dict[str, type[Channel[Any]]]:
        """Every channel by name (its settings section holds the same registry)."""
        return self.channels.channel_classes

    @property
    def all_template_dirs(self) -> list[Path]:
        """User template folders first, then the templates bundled with the hub (if kept)."""
        bundled = [bundled_path("templates")] if self.bundled.templates else []
        return [*self.template_dirs, *bundled]


def bundled_path(name: str) -> Path:
    """Path of a file shipped with the hub (``settings.toml``, ``templates``)."""
    # A wheel carries the root's files as hub/defaults/ (see pyproject.toml);
    # a checkout (and an editable install) has them beside the hub/ folder.
    hub = Path(__file__).parent.parent
    packaged = hub / "defaults" / name
    return packaged if packaged.exists() else hub.parent / name


def settings_path() -> Path:
    """The settings file this process reads."""
    if explicit := os.environ.get(f"{ENV_PREFIX}SETTINGS"):
        return Path(explicit)
    local = Path("settings.toml")
    return local if local.exists() else bundled_path("settings.toml")


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate settings, raising :class:`ConfigError` naming the bad key."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    _check_env_names()
    data = _with_bundled(data, path)
    try:
        cls = settings_class(_extra_channels(data, path))
        settings = cls(**data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, path, text)) from exc
    except SettingsError as exc:
        raise ConfigError(describe_env_error(exc)) from None
    if errors := _unknown_channels(settings):
        unknown = ValidationError.from_exception_data("Settings", errors)
        raise ConfigError(describe(unknown, path, text)) from None
    settings.subscriptions = [s for s in settings.subscriptions if s.enabled]
    return settings


def _with_bundled(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A user's settings on top of the bundled event types and subscriptions.

    A user's entries add to the bundled ones and replace those of the same
    name; a subscription with ``enabled = false`` drops the bundled one of
    its name. ``bundled = {events = false}`` (or ``subscriptions``) opts out
    of a kind. Bundled subscriptions go after the user's, so an error in the
    user's file keeps pointing at its own line.
    """
    bundled_file = bundled_path("settings.toml")
    if path.resolve() == bundled_file.resolve():
        return data
    keep = data.get("bundled", {})
    keep = keep if isinstance(keep, dict) else {}
    bundled = tomllib.loads(bundled_file.read_text(encoding="utf-8"))
    merged = dict(data)
    events = data.get("events", {})
    if keep.get("events", True) is not False and isinstance(events, dict):
        merged["events"] = {**bundled.get("events", {}), **events}
    subscriptions = data.get("subscriptions", [])
    if keep.get("subscriptions", True) is not False and isinstance(subscriptions, list):
        named = {entry.get("name") for entry in subscriptions if isinstance(entry, dict)}
        extra = [entry for entry in bundled.get("subscriptions", []) if entry["name"] not in named]
        merged["subscriptions"] = [*subscriptions, *extra]
    return merged


def settings_class(extra_channels: Sequence[str] = ()) -> type[Settings]:
    """:class:`Settings` with a section for every registered channel, validated by its model."""
    try:
        classes = channel_classes(extra_channels)
    except (ImportError, AttributeError, TypeError) as exc:
        raise ConfigError(f"extra_channels: {exc}") from exc
    sections: dict[str, Any] = {}
    kinds = {name: channel.settings_model for name, channel in classes.items()}
    for name, channel in classes.items():
        section = section_model(name, channel.settings_model, kinds)
        sections[name] = (section, Field(default_factory=section))
    channels = create_model("ChannelsSettings", __base__=ChannelsSettings, **sections)
    cls = create_model(
        "Settings", __base__=Settings, channels=(channels, Field(default_factory=channels))
    )
    channels.channel_classes = classes
    return cls


def _extra_channels(data: dict[str, Any], path: Path) -> list[str]:
    """``extra_channels`` from its env var or the file: it decides what the rest may hold."""
    env_name = f"{ENV_PREFIX}EXTRA_CHANNELS"
    raw: Any = data.get("extra_channels", [])
    if env_name in os.environ:
        try:
            raw = json.loads(os.environ[env_name])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"env var {env_name}: not valid JSON: {exc}") from None
    if not (isinstance(raw, list) and all(isinstance(item, str) for item in raw)):
        raise ConfigError(f'{path}: extra_channels: expected a list like ["module:Class"]')
    return raw


def _unknown_channels(settings: Settings) -> list[InitErrorDetails]:
    known = [*settings.channel_classes, ALERT]
    return [
        InitErrorDetails(
            type=PydanticCustomError(
                "unknown_channel",
                "unknown channel '{channel}'; known: {known}",
                {"channel": subscription.channel, "known": ", ".join(known)},
            ),
            loc=("subscriptions", index, "channel"),
            input=subscription.channel,
        )
        for index, subscription in enumerate(settings.subscriptions)
        if subscription.channel not in known
    ]


# HUB_ variables that are not settings keys.
_OTHER_ENV = ("SETTINGS", "TEST_")


def _check_env_names() -> None:
    """A mistyped HUB_ env var (HUB_BROKER_URI) would be silently ignored: refuse it."""
    known = {name.upper() for name in Settings.model_fields}
    for name in os.environ:
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key.startswith(_OTHER_ENV) or key.split("__")[0] in known:
            continue
        raise ConfigError(
            f"env var {name}: no such setting (known: {', '.join(sorted(known)).lower()})"
        )


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded on first use (and again by :func:`use_settings`)."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def use_settings(settings: Settings) -> None:
    """Make ``settings`` the process's: a reload (:mod:`hub.reloads`) loaded them afresh."""
    global _current
    _current = settings
