"""Spec: settings.toml plus HUB_ env vars make one settings object; errors name key and source."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.events import Catalog
from hub.settings import EventType, bundled_path, load_settings, parse_duration


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
    assert set(settings.events) == {
        "user.registered",
        "task.failed",
        "task.retried",
        "task.succeeded",
        "notification.failed",
        "event.completed",
    }
    assert not any(event_type.completion for event_type in settings.events.values())
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


def _line(text: str, wanted: str, after: str = "") -> int:
    """1-based number of the first line equal to ``wanted`` after the line ``after``."""
    lines = text.splitlines()
    start = lines.index(after) if after else 0
    return lines.index(wanted, start) + 1


def test_a_nested_key_names_its_own_line_not_a_namesake_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    text = '[api]\nport = 8000\n\n[channels.email]\nhost = "smtp.example.com"\nport = "x"\n'
    path.write_text(text)

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    line = _line(text, 'port = "x"')
    assert line == 6
    assert f"{path}:{line}: channels.email.port:" in str(error.value)


SUBSCRIPTIONS = """
[events."user.registered"]
description = "A user created an account."

[[subscriptions]]
name = "welcome"
event = "user.registered"
channel = "email"
to = "{{ data.email }}"
template = "welcome"

[[subscriptions]]
name = "welcome-sms"
event = "user.registered"
channel = "sms"
to = "{{ data.phone }}"
templat = "welcome"
"""


def test_a_bad_key_in_the_second_list_item_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(SUBSCRIPTIONS)

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    typo = _line(SUBSCRIPTIONS, 'templat = "welcome"')
    assert f"{path}:{typo}: subscriptions.1.templat: Extra inputs are not permitted" in str(
        error.value
    )


def test_a_missing_key_names_the_line_of_its_table(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(SUBSCRIPTIONS)

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    second = _line(SUBSCRIPTIONS, "[[subscriptions]]", after='template = "welcome"')
    assert f"{path}:{second}: subscriptions.1.template: Field required" in str(error.value)


def test_keys_inside_multi_line_strings_and_arrays_are_not_mistaken_for_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.toml"
    text = (
        'template_dirs = [\n  "a",  # [not a table\n]\n'
        '[events."x.y"]\ndescription = """\n[api]\nport = 1\n"""\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n'
    )
    path.write_text(text)

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}:{_line(text, 'port = 0')}: api.port:" in str(error.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("HUB_TEMPLATE_DIRS", "[x"), ("HUB_CHANNELS__EMAIL", "{"), ("HUB_EVENTS", '{"a": ')],
)
def test_bad_json_in_an_env_var_is_one_line_naming_it(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as error:
        load_settings(settings_file)

    message = str(error.value)
    assert message.startswith(f"env var {name}: not valid JSON: ")
    assert "\n" not in message
    assert error.value.__suppress_context__  # no pydantic-settings traceback behind it


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("24h", 86_400),
        ("2d", 172_800),
        (" 1 h ", 3_600),
        ("90", 90),
        ("2.5", 2.5),
        (30, 30),
        (1.5, 1.5),
        ("36500d", 36_500 * 86_400),
    ],
)
def test_durations_are_an_int_with_a_unit_or_seconds(value: str | float, seconds: float) -> None:
    assert parse_duration(value, "delivery.window") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is not a duration"),
        ("soon", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("10y", "is not a duration"),
        (math.nan, "is not a duration"),
        (True, "is not a duration"),
        ("-5s", "must be above zero"),
        (-1, "must be above zero"),
        ("0s", "must be above zero"),
        (0, "must be above zero"),
        ("999999999999d", "longer than 100 years"),
        ("9" * 5000 + "d", "longer than 100 years"),
        (10**400, "longer than 100 years"),
        (math.inf, "longer than 100 years"),
    ],
)
def test_a_bad_duration_is_a_value_error_naming_the_key(value: str | float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as error:
        parse_duration(value, "delivery.window")

    assert str(error.value).startswith("delivery.window: ")
    assert len(str(error.value)) < 120  # a huge value is not echoed whole


def test_zero_is_a_duration_where_a_positive_one_is_not_needed() -> None:
    assert parse_duration("0s", "delay", positive=False) == 0.0
    with pytest.raises(ValueError, match="delay: '-1s' must be at least zero"):
        parse_duration("-1s", "delay", positive=False)


VENDOR_SDKS = ("twilio", "aiohttp", "aiosmtplib", "apprise", "redis", "celery")


def _modules_loaded_by(statement: str) -> list[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return loaded.split()


def test_settings_sit_below_everything_but_the_errors_and_the_channel_registry() -> None:
    # Everything imports settings; settings importing back would be a cycle,
    # and a CLI command that only reads settings would pay for redis.
    loaded = _modules_loaded_by("import hub.settings")

    hub_modules = {m for m in loaded if m == "hub" or m.startswith("hub.")}
    assert hub_modules - {"hub", "hub.errors", "hub.channels"} == {
        m for m in hub_modules if m.startswith("hub.settings")
    }
    assert not [m for m in loaded if m.split(".")[0] in VENDOR_SDKS]


@pytest.mark.parametrize(
    "statement",
    [
        "import hub.channels",
        "import hub.settings; hub.settings.load_settings()",
        "import hub.routing",
    ],
)
def test_channels_settings_and_routing_load_no_vendor_sdk(statement: str) -> None:
    loaded = _modules_loaded_by(statement)

    assert not [m for m in loaded if m.split(".")[0] in VENDOR_SDKS[:4]]


def test_a_flat_channel_section_is_its_one_provider_called_default(settings_file: Path) -> None:
    settings = load_settings(settings_file)

    [provider] = settings.channels.sms.all_providers
    assert provider.name == "default"
    assert provider is settings.channels.sms


def test_listed_providers_inherit_the_keys_of_their_section(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        """
[channels.sms]
timeout_s = 5.0
rate_limit = "1/s"

[[channels.sms.providers]]
name = "primary"
account_sid = "AC1"
auth_token = "t1"
from_number = "+15005550006"

[[channels.sms.providers]]
name = "backup"
account_sid = "AC2"
auth_token = "t2"
from_number = "+15005550006"
timeout_s = 2.0
"""
    )

    providers = load_settings(path).channels.sms.all_providers

    assert [(p.name, p.account_sid, p.timeout_s, p.rate_limit) for p in providers] == [
        ("primary", "AC1", 5.0, "1/s"),
        ("backup", "AC2", 2.0, "1/s"),
    ]


def test_a_bad_key_in_a_listed_provider_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        '[[channels.email.providers]]\nname = "a"\n\n'
        '[[channels.email.providers]]\nname = "b"\nprot = 25\n'
    )

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}:6: channels.email.providers.1.prot: Extra inputs" in str(error.value)


def test_a_provider_via_another_channel_takes_that_channels_keys_and_the_delivery_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        """
[channels.sms]
retry_window = "2h"
timeout_s = 5.0

[[channels.sms.providers]]
name = "twilio"
account_sid = "AC1"

[[channels.sms.providers]]
name = "gateway"
via = "apprise"
urls = ["json://127.0.0.1/sms/{recipient}"]
"""
    )

    settings = load_settings(path)
    twilio, gateway = settings.channels.sms.all_providers

    assert settings.channels.kind_of("sms", twilio).name == "sms"
    assert settings.channels.kind_of("sms", gateway).name == "apprise"
    assert (gateway.retry_window, gateway.timeout_s) == ("2h", 15.0)  # the Apprise default
    assert (twilio.retry_window, twilio.timeout_s) == ("2h", 5.0)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ('via = "pigeon"', "via names no channel that can send for sms; known: email,"),
        ('via = "apprise"\naccount_sid = "AC1"', "providers.0.account_sid: Extra inputs"),
    ],
)
def test_a_bad_via_provider_names_its_line(tmp_path: Path, entry: str, error: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(f'[[channels.sms.providers]]\nname = "gateway"\n{entry}\n')

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert re.search(rf"{re.escape(str(path))}:\d+: channels\.sms\.providers\.0", str(raised.value))
    assert error in str(raised.value)


def test_only_a_listed_provider_may_send_via_another_channel(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[channels.sms]\nvia = "apprise"\n')

    with pytest.raises(ConfigError, match=r"channels\.sms\.via: only a listed provider"):
        load_settings(path)


def test_provider_names_must_be_distinct(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[[channels.slack.providers]]\nname = "a"\n' * 2)

    with pytest.raises(ConfigError, match="provider names must be distinct"):
        load_settings(path)


def test_a_subscription_to_an_unknown_channel_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        '[[subscriptions]]\nname = "x"\nevent = "e"\nchannel = "pigeon"\nto = "t"\ntemplate = "t"\n'
    )

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}:4: subscriptions.0.channel: unknown channel 'pigeon'" in str(error.value)
    assert "known: email, sms, slack, webhook, apprise, alert" in str(error.value)


def test_an_extra_channel_gets_a_section_validated_by_its_own_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('extra_channels = ["tests.recording_channel:RecordingChannel"]\n')
    monkeypatch.setenv("HUB_CHANNELS__RECORDER__PATH", "/tmp/x.jsonl")

    settings = load_settings(path)

    assert settings.channels.recorder.path == "/tmp/x.jsonl"
    assert settings.channel_classes["recorder"].queue == "recorder"


def test_an_extra_channel_that_cannot_be_imported_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('extra_channels = ["tests.nowhere:Pigeon"]\n')

    with pytest.raises(ConfigError, match="extra_channels: No module named 'tests.nowhere'"):
        load_settings(path)


def _user_settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_a_users_file_adds_to_the_bundled_catalog_and_subscriptions(tmp_path: Path) -> None:
    path = _user_settings(
        tmp_path,
        """
[api]
port = 9000

[events."order.shipped"]
description = "An order left the warehouse"

[[subscriptions]]
name = "shipped-email"
event = "order.shipped"
channel = "email"
to = "{{ data.email }}"
template = "user.registered"
""",
    )

    settings = load_settings(path)

    assert {"user.registered", "task.failed", "order.shipped"} <= set(settings.events)
    names = [s.name for s in settings.subscriptions]
    assert {"welcome-email", "task-failed-oncall", "shipped-email"} <= set(names)
    assert settings.api.port == 9000


def test_a_users_subscription_replaces_or_drops_the_bundled_one_of_its_name(tmp_path: Path) -> None:
    path = _user_settings(
        tmp_path,
        """
[[subscriptions]]
name = "welcome-email"
event = "user.registered"
channel = "email"
to = "{{ data.email }}"
template = "user.registered"
ttl = "1h"

[[subscriptions]]
name = "welcome-sms"
enabled = false
event = "user.registered"
channel = "sms"
to = ""
template = "user.registered.sms"
""",
    )

    by_name = {s.name: s for s in load_settings(path).subscriptions}

    assert by_name["welcome-email"].ttl == "1h"
    assert "welcome-sms" not in by_name
    assert "task-failed-oncall" in by_name


def test_bundled_entries_can_be_left_out_by_kind(tmp_path: Path) -> None:
    path = _user_settings(
        tmp_path,
        """
bundled = {events = false, subscriptions = false, templates = false}

[events."order.shipped"]
description = "An order left the warehouse"
""",
    )

    settings = load_settings(path)

    assert list(settings.events) == ["order.shipped"]
    assert settings.subscriptions == []
    assert bundled_path("templates") not in settings.all_template_dirs


def test_an_error_in_a_users_subscription_names_its_own_line(tmp_path: Path) -> None:
    path = _user_settings(
        tmp_path,
        '[[subscriptions]]\nname = "x"\nevent = "user.registered"\nchannel = "email"\n'
        'template = "user.registered"\nto = "t"\nttl = "forever"\n',
    )

    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:7: subscriptions\.0\.ttl"):
        load_settings(path)
