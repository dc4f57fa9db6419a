"""Template folders on disk, read as template contents: the seed of the template store.

A folder is named after its template and holds one file per part. The files
map onto variants (the README's "Templates" section):

- ``subject.txt``, ``body.txt`` and ``body.html`` are the email variant;
- ``subject.txt`` doubles as the alert title and ``body.txt`` as its body;
- a ``<name>.sms`` folder's ``body.txt`` is the sms variant of ``<name>``;
- ``<locale>/`` sub-folders (``fr/subject.txt``) hold the same parts for a locale;
- folders starting with ``_`` (layouts, partials) keep their files as they
  are, in a ``files`` variant, for ``{% extends %}`` and ``{% include %}``;
- an optional ``template.toml`` names the event type (``event_type = "..."``).

Each folder comes whole from the first template directory that has it: a
user folder overriding a subject and text but no HTML has no HTML, instead of
the bundled one beside the new text.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.errors import ConfigError

SMS_SUFFIX = ".sms"
EMAIL_FILES = {"subject.txt": "subject", "body.txt": "text", "body.html": "html"}
ALERT_FILES = {"subject.txt": "title", "body.txt": "body"}
SMS_FILES = {"body.txt": "body"}

Variants = dict[str, dict[str, str]]


@dataclass(slots=True)
class FileTemplate:
    """One template as its folders describe it."""

    name: str
    event_type: str | None = None
    variants: Variants = field(default_factory=dict)
    locales: dict[str, Variants] = field(default_factory=dict)

    @property
    def content(self) -> dict[str, Any]:
        return {"variants": self.variants, "locales": self.locales}

    @property
    def digest(self) -> str:
        """A hash of what the files say: sync makes a version only when it moves."""
        body = {"event_type": self.event_type, **self.content}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_templates(dirs: Sequence[Path]) -> dict[str, FileTemplate]:
    """Every template the folders in ``dirs`` define, each folder from the first dir that has it."""
    found: dict[str, FileTemplate] = {}
    for folder in winning_folders(dirs):
        _read_folder(folder, found)
    return found


def winning_folders(dirs: Sequence[Path]) -> Iterator[Path]:
    """Each template folder of ``dirs``, from the first of them that has one of its name."""
    taken: set[str] = set()
    for root in dirs:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for folder in folders:
            if folder.name not in taken:
                taken.add(folder.name)
                yield folder


def _read_folder(folder: Path, found: dict[str, FileTemplate]) -> None:
    if folder.name.startswith("_"):
        files = {
            path.relative_to(folder).as_posix(): _text(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        found[folder.name] = FileTemplate(folder.name, variants={"files": files})
        return
    sms = folder.name.endswith(SMS_SUFFIX)
    name = folder.name.removesuffix(SMS_SUFFIX) if sms else folder.name
    template = found.setdefault(name, FileTemplate(name))
    _merge(template.variants, _variants(folder, sms))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        _merge(template.locales.setdefault(sub.name, {}), _variants(sub, sms))
    if (toml := folder / "template.toml").is_file():
        try:
            meta = tomllib.loads(_text(toml))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml}: {exc}") from None
        template.event_type = meta.get("event_type", template.event_type)


def _variants(folder: Path, sms: bool) -> Variants:
    """The variants one folder's files make (see the module docstring)."""
    texts = {
        p.name: _text(p) for p in folder.iterdir() if p.is_file() and p.name != "template.toml"
    }
    mappings = {"sms": SMS_FILES} if sms else {"email": EMAIL_FILES, "alert": ALERT_FILES}
    variants: Variants = {}
    for variant, files in mappings.items():
        parts = {part: texts[file] for file, part in files.items() if file in texts}
        if parts:
            variants[variant] = parts
    return variants


def _merge(into: Variants, variants: Variants) -> None:
    for variant, parts in variants.items():
        into.setdefault(variant, {}).update(parts)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
