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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hub.errors import ConfigError

ENV_PREFIX = "HUB_"
CHANNEL_NAMES = ("email",)
ChannelName = Literal["email"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class DeliverySettings(_Strict):
    """Retry policy shared by every channel."""

    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    # One provider call may take this long before it is cut and retried.
    attempt_timeout_s: float = Field(60.0, gt=0)
    # The sweeper re-enqueues work the broker lost (a publish that failed, a
    # Redis that lost its data): anything still queued after stuck_after_s.
    sweep_interval_s: float = Field(30.0, gt=0)
    stuck_after_s: float = Field(60.0, gt=0)


class EmailSettings(_Strict):
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


class ChannelsSettings(_Strict):
    email: EmailSettings = EmailSettings()


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
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, text)) from exc


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
