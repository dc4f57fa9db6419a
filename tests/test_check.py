"""Spec: `hub check` names every problem in settings and templates; `hub up` checks first.

A subscription to an unknown event, a template that does not compile, or one
that fails on its event type's example data is one line naming the file (and
line). `hub up` with such settings exits at once with the same lines and
starts nothing, instead of waiting for a worker that cannot start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.smtp_sink import _free_port


def hub(
    tmp_path: Path, *args: str, settings: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_VAR_DIR"] = str(tmp_path / "var")
    env["HUB_EMBEDDED_REDIS_PORT"] = str(_free_port())
    if settings is not None:
        (tmp_path / "settings.toml").write_text(settings)
        env["HUB_SETTINGS"] = str(tmp_path / "settings.toml")
        env["HUB_TEMPLATE_DIRS"] = f'["{tmp_path / "templates"}"]'
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


UNKNOWN_EVENT = """
[[subscriptions]]
name = "typo"
event = "user.registred"
channel = "email"
to = "{{ data.email }}"
template = "user.registered"
"""


def test_the_shipped_settings_pass(tmp_path: Path) -> None:
    result = hub(tmp_path, "check")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_a_subscription_to_an_unknown_event_is_named(tmp_path: Path) -> None:
    result = hub(tmp_path, "check", settings=UNKNOWN_EVENT)

    assert result.returncode == 2
    assert "subscriptions[0] ('typo').event: 'user.registred' is not in the event catalog" in (
        result.stderr
    )


def test_a_template_that_does_not_compile_is_named_with_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "broken"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text("Hello\n{% if data.name %}\nno end\n")

    result = hub(tmp_path, "check", settings="")

    assert result.returncode == 2
    assert f"{folder / 'body.txt'}:" in result.stderr
    assert "endif" in result.stderr


def test_a_template_failing_on_its_events_example_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "order.shipped"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Order {{ data.order_id }}")
    (folder / "body.txt").write_text("Shipped to {{ data.address.city }}")
    settings = """
[events."order.shipped"]
example = {order_id = "o-1"}

[[subscriptions]]
name = "shipped"
event = "order.shipped"
channel = "email"
to = "buyer@example.com"
template = "order.shipped"
"""

    result = hub(tmp_path, "check", settings=settings)

    assert result.returncode == 2
    assert "subscriptions[0] ('shipped'): with the example data:" in result.stderr
    assert "address" in result.stderr


def test_hub_up_with_a_broken_subscription_exits_at_once_starting_nothing(tmp_path: Path) -> None:
    started = time.monotonic()

    result = hub(tmp_path, "up", "--port", str(_free_port()), settings=UNKNOWN_EVENT)

    assert result.returncode == 2
    assert "'user.registred' is not in the event catalog" in result.stderr
    assert "nothing was started" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "var" / "redis").exists()
