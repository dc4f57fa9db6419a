"""What every ``hub`` command shares: failing with a one-line message, settings, checks, JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hub.errors import ConfigError
from hub.settings import Settings, get_settings


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"hub: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def settings_or_fail() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None


def checked_or_fail(settings: Settings, nothing: str = "nothing was started") -> None:
    """Run ``hub check``'s checks; print each problem and exit 2 if there is one."""
    from hub.checks import problems

    if found := problems(settings):
        for line in found:
            typer.secho(line, fg=typer.colors.RED, err=True)
        raise fail(f"{len(found)} problem(s) found; {nothing}")


def json_option(option: str, value: str) -> Any:
    """Parse a JSON option given inline or as ``@file``, failing with the place of the error."""
    source, text = option, value
    if value.startswith("@"):
        source = value[1:]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"{option}: cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
