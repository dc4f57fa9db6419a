"""Spec: a settings snapshot names what changed, and whether it applies now or needs a restart.

Pure logic over settings and template folders: no store, no process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import SecretStr

from hub.settings import bundled_path, load_settings
from hub.settings.snapshot import changes, needs_restart, snapshot


def shipped(tmp_path: Path) -> dict[str, object]:
    settings = load_settings()
    return snapshot(settings, [tmp_path, *settings.all_template_dirs])


def test_the_same_settings_have_no_changes(tmp_path: Path) -> None:
    assert changes(shipped(tmp_path), shipped(tmp_path)) == []


def test_each_changed_key_says_whether_it_applies_now() -> None:
    old = {"channels.email.rate_limit": "", "database_url": "", 'events."order.shipped"': None}
    new = {"channels.email.rate_limit": "5/s", "database_url": "postgresql://db/hub"}

    assert [str(change) for change in changes(old, new)] == [
        "channels.email.rate_limit: applies now",
        "database_url: needs a restart",
        'events."order.shipped": applies now',
    ]


def test_restart_keys_cover_their_sections_and_only_those() -> None:
    assert needs_restart("api.port")
    assert needs_restart("broker_url")
    assert needs_restart("delivery.sweep_interval_s")
    assert not needs_restart("delivery.max_attempts")
    assert not needs_restart("api_extra")
    assert not needs_restart("subscriptions")


def test_an_overriding_template_folder_is_one_change_per_file_that_differs(tmp_path: Path) -> None:
    before = shipped(tmp_path)
    folder = tmp_path / "user.registered"
    shutil.copytree(bundled_path("templates") / "user.registered", folder)
    (folder / "subject.txt").write_text("Hello {{ data.name }}")

    assert [str(change) for change in changes(before, shipped(tmp_path))] == [
        "templates: user.registered/subject.txt: applies now"
    ]


def test_secrets_are_kept_as_fingerprints_that_still_change(tmp_path: Path) -> None:
    settings = load_settings()
    url = "amqp://hub:s3cret-pass@mq:5672//"
    one = settings.model_copy(update={"secret_key": SecretStr("k" * 32), "broker_url": url})
    other = one.model_copy(update={"secret_key": SecretStr("j" * 32)})

    first, second = snapshot(one, []), snapshot(other, [])

    assert "k" * 32 not in str(first) and "s3cret-pass" not in str(first)
    assert first["broker_url"].startswith("amqp://hub:pbkdf2:")
    assert [str(change) for change in changes(first, second)] == ["secret_key: needs a restart"]
