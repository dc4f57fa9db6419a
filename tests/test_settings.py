"""Spec: settings.toml plus HUB_ env vars make one settings object; errors name key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.events import Catalog
from hub.settings import EventType, bundled_path, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(bundled_path("settings.toml").read_text())
    return path


def test_bundled_settings_load_with_the_documented_defaults(settings_file: Path) -> None:
    settings = load_settings(settings_file)

    assert settings.broker_url == ""
    assert settings.resolved_database_url.endswith("var/hub.db")
    assert settings.channels.email.host == ""
    assert set(settings.events) == {"user.registered", "task.failed", "notification.failed"}
    assert {(s.event, s.channel) for s in settings.subscriptions} == {
        ("user.registered", "email"),
        ("user.registered", "sms"),
        ("task.failed", "alert"),
        ("notification.failed", "alert"),
    }
    assert settings.channels.alert_targets == ["slack"]


def test_env_vars_override_nested_keys(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_BROKER_URL", "redis://elsewhere:6379/1")
    monkeypatch.setenv("HUB_CHANNELS__EMAIL__HOST", "smtp.example.com")
    monkeypatch.setenv("HUB_CHANNELS__EMAIL__PORT", "2525")

    settings = load_settings(settings_file)

    assert settings.broker_url == "redis://elsewhere:6379/1"
    assert settings.channels.email.host == "smtp.example.com"
    assert settings.channels.email.port == 2525
    assert settings.channels.email.pool_size == 2  # untouched keys keep the file's value


def test_secrets_come_from_env_and_are_redacted(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_CHANNELS__EMAIL__PASSWORD", "hunter2")

    settings = load_settings(settings_file)

    assert settings.channels.email.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_unknown_key_names_the_file_line_and_key(settings_file: Path) -> None:
    text = settings_file.read_text().replace("pool_size = 2", "pool_size = 2\npoolsize = 3")
    settings_file.write_text(text)
    line = text.splitlines().index("poolsize = 3") + 1

    with pytest.raises(ConfigError) as error:
        load_settings(settings_file)

    assert (
        f"{settings_file}:{line}: channels.email.poolsize: Extra inputs are not permitted"
        in str(error.value)
    )


def test_wrong_type_in_env_var_names_the_env_var(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_API__PORT", "eighty")

    with pytest.raises(ConfigError) as error:
        load_settings(settings_file)

    assert "env var HUB_API__PORT: api.port:" in str(error.value)


def test_invalid_toml_names_the_file_and_line(settings_file: Path) -> None:
    settings_file.write_text("broker_url = \n")

    with pytest.raises(ConfigError, match=r"settings.toml: invalid TOML: .*line 1"):
        load_settings(settings_file)


def test_missing_settings_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(tmp_path / "nope.toml")


def test_an_invalid_event_schema_is_reported_at_start_up() -> None:
    broken = EventType.model_validate({"schema": {"type": "objekt"}})

    with pytest.raises(ConfigError, match=r"events.x.schema"):
        Catalog({"x": broken})


def test_a_mistyped_env_var_is_refused_naming_it(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_BROKER_URI", "redis://elsewhere")

    with pytest.raises(ConfigError, match="env var HUB_BROKER_URI: no such setting"):
        load_settings(settings_file)
