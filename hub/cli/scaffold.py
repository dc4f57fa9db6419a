"""``hub init [DIR]``: a settings file and a templates folder for a hub installed with pip."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from hub.cli.common import fail

HEADER = """\
# hub settings, made by `hub init`. Every key is shown commented out with its
# default: uncomment and change what you need. Event types and subscriptions
# you add here join the bundled ones (see the README's Settings section).
# Run the hub from this folder (`hub up`), or point HUB_SETTINGS at this file.

"""
# The one key set: the templates copied beside this file, which `hub up`
# syncs into the store and which win over the bundled ones.
TEMPLATE_DIRS = 'template_dirs = ["templates"]'


def init(
    folder: Annotated[
        Path, typer.Argument(help="An empty or new folder [default: the current one]")
    ] = Path("."),
) -> None:
    """Scaffold settings.toml (every key, commented) and templates/ into an empty folder."""
    from hub.settings import bundled_path

    if folder.exists() and any(folder.iterdir()):
        raise fail(f"{folder}: not empty; hub init writes only into an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    bundled = bundled_path("settings.toml").read_text(encoding="utf-8")
    (folder / "settings.toml").write_text(HEADER + commented(bundled), encoding="utf-8")
    shutil.copytree(bundled_path("templates"), folder / "templates")
    typer.echo(
        f"wrote {folder / 'settings.toml'} and {folder / 'templates'}/\n"
        f"next: cd {folder} && hub up"
    )


def commented(settings: str) -> str:
    """``settings`` with every key and table commented out, but ``template_dirs`` set."""
    lines = []
    for line in settings.splitlines():
        if line.startswith("template_dirs ="):
            lines.append(TEMPLATE_DIRS)
        elif line.strip() and not line.lstrip().startswith("#"):
            lines.append(f"# {line}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
