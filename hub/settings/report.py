"""Settings errors as one line each, naming the key and its file line or env var."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from hub.settings.toml_lines import key_lines, line_of

ENV_PREFIX = "HUB_"


def describe(exc: ValidationError, path: Path, text: str) -> str:
    lines_of_keys = key_lines(text)
    lines = []
    for error in exc.errors():
        loc = _without_provider_kind(error["loc"])
        key = ".".join(str(part) for part in loc)
        env_name = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
        if env_name in os.environ:
            where = f"env var {env_name}"
        else:
            line = line_of(lines_of_keys, loc)
            where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {key}: {error['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _without_provider_kind(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """``loc`` less the kind pydantic inserts after ``providers.<n>`` (a tagged union)."""
    for at in range(len(loc) - 2):
        if loc[at] == "providers" and isinstance(loc[at + 1], int):
            return loc[: at + 2] + loc[at + 3 :]
    return loc


def describe_env_error(exc: SettingsError) -> str:
    """One line for an env var pydantic-settings could not read (bad JSON for a list or table)."""
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        # The decoder keeps the text it failed on: the env var holding it is the culprit.
        names = sorted(
            name
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) and value == cause.doc
        )
        if names:
            return f"env var {names[0]}: not valid JSON: {cause}"
    return f"env vars: {exc}" + (f": {cause}" if cause else "")
