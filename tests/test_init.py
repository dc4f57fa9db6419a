"""Spec: `hub init DIR` scaffolds a settings file and templates for a hub installed with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from hub.settings import bundled_path


def _hub(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_writes_every_key_commented_and_the_templates_and_the_result_checks(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "my-hub"

    made = _hub("init", str(folder), cwd=tmp_path)
    checked = _hub("check", cwd=folder)

    assert made.returncode == 0, made.stderr
    settings = (folder / "settings.toml").read_text()
    # Only the scaffolded templates are set; every other key is shown, commented.
    assert tomllib.loads(settings) == {"template_dirs": ["templates"]}
    for key in ("# broker_url = ", "# [api]", "# port = 8000", "# [channels.email]"):
        assert key in settings
    bundled = sorted(p.name for p in bundled_path("templates").iterdir())
    assert sorted(p.name for p in (folder / "templates").iterdir()) == bundled
    assert checked.returncode == 0, checked.stderr
    assert "templates in templates" in checked.stdout


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    refused = _hub("init", str(tmp_path), cwd=tmp_path)

    assert refused.returncode != 0
    assert f"{tmp_path}: not empty" in refused.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "settings.toml").exists()
