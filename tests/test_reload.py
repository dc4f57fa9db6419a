"""Spec: `hub reload` applies edited settings and templates to every running process.

Workers learn of a reload from a version number in the store, not from a
signal, so an edited template reaches every email sent after `hub reload`
returns (before it, a template was read once per worker process and an edit
reached some emails but not others). `hub reload` names each changed key and
whether it applies now or needs a restart; a broken settings file changes
nothing; with nothing changed it says so and moves no version.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hub.settings import bundled_path
from hub.store import config
from hub.store.db import session
from tests.conftest import Stack, other_redis_db, run_hub, running_stack
from tests.smtp_sink import SmtpSink


@pytest.fixture(scope="module")
def reloading(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A stack of its own: these tests edit its settings file and templates."""
    home = tmp_path_factory.mktemp("reload")
    with running_stack(home, other_redis_db(broker_url), smtp) as running:
        yield running


def welcome(to: str) -> dict[str, str]:
    return {"user_id": uuid.uuid4().hex[:8], "email": to, "name": "Ada"}


def address() -> str:
    return f"reload-{uuid.uuid4().hex[:10]}@example.com"


def settings_version(stack: Stack) -> int:
    with session(stack.database_url) as db:
        return config.version(db.connection())


@contextmanager
def edited(path: Path, old: str, new: str) -> Iterator[None]:
    """``path`` with ``old`` replaced by ``new`` for the block, then as it was."""
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(original)


def test_an_edited_template_reaches_every_email_sent_after_reload(
    reloading: Stack, smtp: SmtpSink
) -> None:
    # Given: every worker process has rendered the bundled welcome email.
    for to in [address() for _ in range(4)]:
        reloading.settled(reloading.publish("user.registered", welcome(to)))
        assert smtp.to(to)[0]["Subject"] == "Welcome, Ada!"
    folder = reloading.home / "templates" / "user.registered"
    shutil.copytree(bundled_path("templates") / "user.registered", folder)
    (folder / "subject.txt").write_text("Glad you joined, {{ data.name }}!")

    # When
    result = run_hub(reloading, "reload")

    # Then
    assert result.returncode == 0, result.stderr
    assert "templates: user.registered/subject.txt: applies now" in result.stdout
    recipients = [address() for _ in range(5)]
    for to in recipients:
        reloading.settled(reloading.publish("user.registered", welcome(to)))
    subjects = [smtp.to(to)[0]["Subject"] for to in recipients]
    assert subjects == ["Glad you joined, Ada!"] * 5


def test_a_rate_limit_applies_now_and_a_broker_url_needs_a_restart(reloading: Stack) -> None:
    settings_file = Path(reloading.env["HUB_SETTINGS"])
    other_broker = {**reloading.env, "HUB_BROKER_URL": "redis://127.0.0.1:1/0"}
    with edited(
        settings_file, 'retry_window = "24h"', 'retry_window = "24h"\nrate_limit = "500/s"'
    ):
        before = settings_version(reloading)

        result = run_hub(Stack(**{**vars(reloading), "env": other_broker}), "reload")

        assert result.returncode == 0, result.stderr
        assert "channels.email.rate_limit: applies now" in result.stdout
        assert "broker_url: needs a restart" in result.stdout
        assert settings_version(reloading) == before + 1
    run_hub(reloading, "reload")


def test_a_broken_settings_file_is_named_and_changes_nothing(reloading: Stack) -> None:
    settings_file = Path(reloading.env["HUB_SETTINGS"])
    before = settings_version(reloading)
    with edited(settings_file, "max_segments = 3", 'max_segments = "three"'):
        line = settings_file.read_text().splitlines().index('max_segments = "three"') + 1

        result = run_hub(reloading, "reload")

        assert result.returncode == 2
        assert f"{settings_file}:{line}: channels.sms.max_segments" in result.stderr
        assert settings_version(reloading) == before


def test_a_reload_with_nothing_changed_says_so_and_moves_no_version(reloading: Stack) -> None:
    run_hub(reloading, "reload")
    before = settings_version(reloading)

    result = run_hub(reloading, "reload")

    assert result.returncode == 0, result.stderr
    assert "nothing changed" in result.stdout
    assert settings_version(reloading) == before


def test_hub_check_lists_the_changes_without_reloading(reloading: Stack) -> None:
    settings_file = Path(reloading.env["HUB_SETTINGS"])
    run_hub(reloading, "reload")
    before = settings_version(reloading)
    with edited(settings_file, "max_segments = 3", "max_segments = 4"):
        result = run_hub(reloading, "check")

        assert result.returncode == 0, result.stderr
        assert "channels.sms.max_segments: applies now" in result.stdout
        assert settings_version(reloading) == before


ORDER_SHIPPED = """
[events."order.shipped"]
description = "An order left the warehouse."

[events."order.shipped".schema]
type = "object"
required = ["email", "order"]

[[subscriptions]]
name = "order-shipped-email"
event = "order.shipped"
channel = "email"
to = "{{ data.email }}"
template = "order.shipped"
"""


ORDER_SHIPPED_API = {
    "event": "order.shipped",
    "channel": "email",
    "to": "{{ data.email }}",
    "template": "order.shipped",
}


def test_a_new_event_type_is_accepted_and_routed_after_reload(
    reloading: Stack, smtp: SmtpSink
) -> None:
    settings_file = Path(reloading.env["HUB_SETTINGS"])
    folder = reloading.home / "templates" / "order.shipped"
    folder.mkdir()
    (folder / "subject.txt").write_text("Order {{ data.order }} shipped")
    (folder / "body.txt").write_text("It is on its way.")
    to = address()
    with reloading.client() as http:
        unknown = http.post("/v1/events", json={"type": "order.shipped", "data": {}})
    assert unknown.status_code == 422
    with edited(settings_file, "# ---- Subscriptions", ORDER_SHIPPED + "\n# ---- Subscriptions"):
        result = run_hub(reloading, "reload")

        assert result.returncode == 0, result.stderr
        assert 'events."order.shipped": applies now' in result.stdout
        assert "subscriptions: applies now" in result.stdout
        event_id = reloading.publish("order.shipped", {"email": to, "order": "A-17"})
        assert reloading.settled(event_id)["notifications"][0]["status"] == "sent"
        assert smtp.to(to)[0]["Subject"] == "Order A-17 shipped"
        # The subscriptions API validates against the reloaded catalog too.
        on_api = {**ORDER_SHIPPED_API, "name": f"api-{event_id}"}
        with reloading.client() as http:
            created = http.post("/v1/subscriptions", json=on_api)
            assert created.status_code == 201, created.text
            assert http.delete(f"/v1/subscriptions/{on_api['name']}").status_code == 204
    run_hub(reloading, "reload")
