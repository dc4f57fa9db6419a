"""The one settings object: ``settings.toml`` overridden by ``HUB_...`` env vars.

The file is ``$HUB_SETTINGS`` or ``./settings.toml``; with neither, the
``settings.toml`` bundled in the package. Nested keys map to env vars with a
double underscore: ``channels.email.host`` is ``HUB_CHANNELS__EMAIL__HOST``.
Env vars win over the file. Unknown keys and wrong types stop start-up with a
:class:`~hub.errors.ConfigError` naming the key and the file (and line) or env var.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hub.errors import ConfigError
from hub.ratelimit import Rate

ENV_PREFIX = "HUB_"
ChannelName = Literal["email", "sms", "slack", "webhook", "apprise", "alert"]
# "alert" in a subscription means every configured alert target.
ALERT_CHANNELS = ("slack", "webhook", "apprise")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Publishes arriving while a group is being stored make the next group on
    # their own; this waits longer before each group, for larger groups still.
    publish_linger_ms: float = Field(0.0, ge=0, le=1000)
    # One log line per request costs a tenth of a publish's time.
    access_log: bool = False
    # FastAPI's native OpenTelemetry spans and metrics, for the global providers.
    opentelemetry: bool = False


class DeliverySettings(_Strict):
    """Retry policy shared by every channel."""

    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    # One provider call may take this long before it is cut.
    attempt_timeout_s: float = Field(30.0, gt=0)
    # The sweeper re-enqueues work the broker lost (a publish that failed, a
    # Redis that lost its data): anything still queued after stuck_after_s.
    sweep_interval_s: float = Field(30.0, gt=0)
    stuck_after_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _sweeper_waits_for_running_attempts(self) -> DeliverySettings:
        # Otherwise the sweeper would hand a send still in progress to another
        # worker, and the message would go out twice.
        if self.stuck_after_s <= self.attempt_timeout_s + 1:
            raise ValueError(
                f"stuck_after_s ({self.stuck_after_s:g}) must exceed attempt_timeout_s "
                f"({self.attempt_timeout_s:g}) by more than a second"
            )
        return self


class ChannelSettings(_Strict):
    """What every channel can be told."""

    # When a provider may or may not have sent a message (a timeout after the
    # request went out, Twilio 20500): "hold" marks it unknown for a person to
    # review; "retry" sends again and risks a duplicate.
    on_unknown: Literal["hold", "retry"] = "hold"
    # Shared by every worker (kept in Redis): "10/s", "50/m", "1/5s"; empty: none.
    rate_limit: str = ""
    burst: int = Field(1, ge=1)
    # Overrides delivery.max_attempts for this channel.
    max_attempts: int | None = Field(None, ge=1)

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        if value:
            try:
                Rate.parse(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class EmailSettings(ChannelSettings):
    """SMTP delivery. An empty ``host`` writes ``.eml`` files to ``var/outbox/email/``."""

    host: str = ""
    port: int = Field(25, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = False
    use_tls: bool = False
    timeout_s: float = Field(10.0, gt=0)
    from_address: str = "Hub <hub@localhost>"
    pool_size: int = Field(2, ge=1, le=64)
    recycle_after: int = Field(100, ge=1)


class SmsSettings(ChannelSettings):
    """Twilio SMS. No ``account_sid``: messages go to ``var/outbox/sms/``."""

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    messaging_service_sid: str = ""
    api_base: str = Field("", description="Empty: Twilio's own; tests point it at a local fake")
    status_callback_url: str = Field("", description="Public URL of POST /v1/callbacks/twilio")
    default_region: str = Field("US", description="Region for numbers given without +country")
    max_segments: int = Field(3, ge=1, le=10)
    over_limit: Literal["refuse", "truncate"] = "refuse"
    timeout_s: float = Field(10.0, gt=0)


class SlackSettings(ChannelSettings):
    """Slack incoming webhook. Empty: payloads go to ``var/outbox/slack/``."""

    webhook_url: SecretStr = SecretStr("")
    timeout_s: float = Field(10.0, gt=0)


class WebhookSettings(ChannelSettings):
    """Generic JSON webhook signed with HMAC-SHA256 (header ``X-Hub-Signature``)."""

    url: str = ""
    secret: SecretStr = SecretStr("")
    timeout_s: float = Field(10.0, gt=0)


class AppriseSettings(ChannelSettings):
    """Any Apprise service by URL (tgram://, discord://, msteams://, json://, ...)."""

    urls: list[SecretStr] = Field(default_factory=list)
    timeout_s: float = Field(15.0, gt=0)


class ChannelsSettings(_Strict):
    email: EmailSettings = EmailSettings()
    sms: SmsSettings = SmsSettings()
    slack: SlackSettings = SlackSettings()
    webhook: WebhookSettings = WebhookSettings()
    apprise: AppriseSettings = AppriseSettings()

    def of(self, channel: str) -> ChannelSettings:
        """The settings of ``channel`` by name."""
        settings: ChannelSettings = getattr(self, channel)
        return settings

    @property
    def alert_targets(self) -> list[str]:
        """The configured alert channels; Slack's outbox when none is configured."""
        configured = {
            "slack": bool(self.slack.webhook_url.get_secret_value()),
            "webhook": bool(self.webhook.url),
            "apprise": bool(self.apprise.urls),
        }
        return [name for name in ALERT_CHANNELS if configured[name]] or ["slack"]


class EventType(_Strict):
    """One entry of the event catalog: what the event means and its data's JSON schema."""

    description: str = ""
    data_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Subscription(_Strict):
    """Who hears about an event, on which channel, with which template."""

    name: str
    event: str
    channel: ChannelName
    to: str = Field(description="Jinja expression giving the recipient, e.g. {{ data.email }}")
    template: str
    when: str = Field("", description="Optional Jinja condition, e.g. data.phone is defined")


class Settings(BaseSettings):
    """Everything the hub can be told. Built once per process by :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    broker_url: str = Field("", description="Empty: `hub up` starts an embedded redis-server")
    redis_url: str = Field("", description="Redis for rate limits; empty: the broker if Redis")
    database_url: str = Field("", description="Empty: SQLite at <var_dir>/hub.db")
    var_dir: Path = Path("var")
    template_dirs: list[Path] = Field(default_factory=list)
    api: ApiSettings = ApiSettings()
    delivery: DeliverySettings = DeliverySettings()
    channels: ChannelsSettings = ChannelsSettings()
    events: dict[str, EventType] = Field(default_factory=dict)
    subscriptions: list[Subscription] = Field(default_factory=list)

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
    def all_template_dirs(self) -> list[Path]:
        """User template folders first, then the templates bundled with the hub."""
        return [*self.template_dirs, bundled_path("templates")]


def bundled_path(name: str) -> Path:
    """Path of a file shipped with the hub (``settings.toml``, ``templates``)."""
    # A wheel carries the root's files as hub/defaults/ (see pyproject.toml);
    # a checkout (and an editable install) has them beside the hub/ folder.
    packaged = Path(__file__).parent / "defaults" / name
    return packaged if packaged.exists() else Path(__file__).parent.parent / name


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
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, text)) from exc


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


def _describe(exc: ValidationError, path: Path, text: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        env_name = ENV_PREFIX + "__".join(str(p) for p in error["loc"]).upper()
        if env_name in os.environ:
            where = f"env var {env_name}"
        else:
            line = _line_of(text, [str(p) for p in error["loc"]])
            where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {key}: {error['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of the last key of ``loc`` in the TOML text."""
    for leaf in reversed(loc):
        if leaf.isdigit():
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith((f"{leaf} ", f"{leaf}=", f'"{leaf}"')) or stripped.endswith(
                (f".{leaf}]", f'"{leaf}"]', f"[{leaf}]")
            ):
                return number
        return None
    return None


@cache
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    return load_settings()
