"""Editing stored templates: merge an edit, validate it, save it as a version, preview it.

The API and the CLI call these; the store keeps the versions
(:mod:`hub.store.templates`) and :mod:`hub.template_checks` finds problems in
one part's source. A save that finds any error stores nothing: every problem
comes back at once, each with its variant, part, locale, line and column.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hub import template_checks
from hub.errors import HubError, TemplateError
from hub.settings import ALERT, Settings
from hub.store import templates as stored
from hub.store.models import TemplateVersion
from hub.templates import (
    DEFAULT_LOCALE,
    SHARED,
    VARIANT_PARTS,
    Library,
    Rendered,
    TemplateSet,
    context_for,
    sandbox,
)

PREVIEW_RECIPIENT = "preview@example.com"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or, as a warning, doubtful) in one part of a template."""

    variant: str
    part: str
    locale: str | None
    line: int | None
    column: int | None
    message: str
    kind: str = "syntax"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class InvalidTemplate(HubError):
    """A template that must not be saved (or previewed), with every problem found."""

    def __init__(self, name: str, problems: list[Problem]) -> None:
        super().__init__(f"template {name!r}: " + "; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(slots=True)
class Saved:
    version: TemplateVersion
    warnings: list[Problem] = field(default_factory=list)


def merged(
    previous: dict[str, Any] | None,
    variants: dict[str, dict[str, str | None] | None] | None,
    locales: dict[str, dict[str, dict[str, str | None] | None] | None] | None,
) -> dict[str, Any]:
    """``previous`` with an edit applied, part by part.

    A variant or part left out keeps its text; one set to ``None`` is removed.
    """
    base = previous or {}
    content: dict[str, Any] = {
        "variants": _merge_variants(base.get("variants") or {}, variants),
        "locales": dict(base.get("locales") or {}),
    }
    for locale, edit in (locales or {}).items():
        if edit is None:
            content["locales"].pop(locale, None)
            continue
        merged_locale = _merge_variants(content["locales"].get(locale) or {}, edit)
        if merged_locale:
            content["locales"][locale] = merged_locale
        else:
            content["locales"].pop(locale, None)
    return content


def _merge_variants(
    previous: dict[str, dict[str, str]], edit: dict[str, dict[str, str | None] | None] | None
) -> dict[str, dict[str, str]]:
    out = {variant: dict(parts) for variant, parts in previous.items()}
    for variant, parts in (edit or {}).items():
        if parts is None:
            out.pop(variant, None)
            continue
        current = out.setdefault(variant, {})
        for part, source in parts.items():
            if source is None:
                current.pop(part, None)
            else:
                current[part] = source
        if not current:
            out.pop(variant)
    return out


def event_type_of(settings: Settings, name: str, given: str | None) -> str | None:
    """The event type a template renders: as given, else its own name when that is one."""
    if given:
        return given
    return name if name in settings.events else None


def sample_context(
    settings: Settings, event_type: str | None, data: dict[str, Any] | None
) -> dict[str, Any]:
    """What a preview renders with: ``data``, else the event type's example."""
    if data is None:
        example = settings.events[event_type].example if event_type in settings.events else None
        data = dict(example or {})
    context = context_for("evt_preview", event_type or "", data)
    context["recipient"] = PREVIEW_RECIPIENT
    return context


def save(
    db: Session,
    library: Library,
    settings: Settings,
    name: str,
    *,
    variants: dict[str, dict[str, str | None] | None] | None,
    locales: dict[str, dict[str, dict[str, str | None] | None] | None] | None,
    event_type: str | None,
    author: str,
    comment: str,
    draft: bool,
) -> Saved:
    """Validate an edit of ``name`` and save it as its next version.

    Raises :class:`InvalidTemplate` with every error found, saving nothing.
    """
    current = library.load(db)
    row = stored.template(db, name)
    if row is None and draft:
        # A draft is a version that is not live; a new template has no live one to keep.
        message = "a new template's first version cannot be a draft: save it, then draft changes"
        raise InvalidTemplate(name, [Problem("", "", None, None, None, message, "draft")])
    event_type = event_type_of(settings, name, event_type or (row.event_type if row else None))
    content = merged(current.content(name) if row else None, variants, locales)
    if not content["variants"] and not content["locales"]:
        raise InvalidTemplate(name, [Problem("", "", None, None, None, "no variant", "empty")])
    warnings: list[Problem] = []
    errors = unknown_parts(content)
    if not errors:
        errors, warnings = check(current, library, settings, name, content, event_type)
    if errors:
        raise InvalidTemplate(name, errors)
    version = stored.add_version(
        db,
        name,
        content,
        event_type=event_type,
        author=author,
        comment=comment,
        draft=draft,
        source="api",
    )
    return Saved(version, warnings)


def check(
    current: TemplateSet,
    library: Library,
    settings: Settings,
    name: str,
    content: dict[str, Any],
    event_type: str | None,
) -> tuple[list[Problem], list[Problem]]:
    """The errors and the warnings in ``content`` as template ``name``."""
    env = sandbox()
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for locale, variant, part, source in _parts(content):
        label = f"{name}/{variant}/{part}"
        found = template_checks.syntax_findings(env, source, label)
        if not found:
            found = template_checks.unsafe_findings(env, source, label)
        errors += [_problem(variant, part, locale, finding) for finding in found]
        if part == "html" or part.endswith(".html"):
            warnings += [
                _problem(variant, part, locale, finding)
                for finding in template_checks.html_findings(source)
            ]
    if errors:
        return errors, warnings
    edited = TemplateSet(library, current.active, {name: content})
    if name.startswith("_"):
        return errors, warnings
    example, schema = _example(settings, event_type)
    for locale, variant in _variants(content):
        errors += _render_problems(edited, settings, name, locale, variant, example, schema)
    return errors, warnings


def _render_problems(
    edited: TemplateSet,
    settings: Settings,
    name: str,
    locale: str | None,
    variant: str,
    example: dict[str, Any] | None,
    schema: dict[str, Any],
) -> list[Problem]:
    """Render one variant with the sample data: undefined variables and SMS length."""
    found: list[Problem] = []
    parts = (edited.content(name) or {}).get("variants", {}).get(variant, {})
    if locale is not None:
        parts = (edited.content(name) or {}).get("locales", {}).get(locale, {}).get(variant, {})
    for part in parts:
        source_name = edited.part_name(name, locale or DEFAULT_LOCALE, variant, part)

        def render(data: dict[str, Any], source_name: str = source_name) -> str:
            context = sample_context(settings, None, data)
            return edited.env.get_template(source_name).render(context)

        if example is None:
            continue
        for finding in template_checks.undefined_findings(render, source_name, example, schema):
            found.append(_problem(variant, part, locale, finding))
    if variant == "sms" and example is not None and not found:
        try:
            text = edited.render(name, "sms", sample_context(settings, None, example), locale).text
        except TemplateError as exc:
            return [Problem(variant, "body", locale, None, None, str(exc), "render")]
        sms = settings.channel_classes.get("sms")
        limit = getattr(settings.channels.of("sms"), "max_segments", None) if sms else None
        if sms is not None and limit is not None:
            too_long = template_checks.sms_finding(sms.describe(text), limit)
            if too_long is not None:
                found.append(_problem(variant, "body", locale, too_long))
    return found


def _example(
    settings: Settings, event_type: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    event = settings.events.get(event_type or "")
    if event is None or event.example is None:
        return None, {}
    return dict(event.example), dict(event.data_schema)


def _parts(content: dict[str, Any]) -> Iterator[tuple[str | None, str, str, str]]:
    for variant, parts in (content.get("variants") or {}).items():
        for part, source in parts.items():
            yield None, variant, part, source
    for locale, variants in (content.get("locales") or {}).items():
        for variant, parts in variants.items():
            for part, source in parts.items():
                yield locale, variant, part, source


def _variants(content: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
    for variant in content.get("variants") or {}:
        if variant != SHARED:
            yield None, variant
    for locale, variants in (content.get("locales") or {}).items():
        for variant in variants:
            yield locale, variant


def _problem(variant: str, part: str, locale: str | None, finding: Any) -> Problem:
    return Problem(
        variant, part, locale, finding.line, finding.column, finding.message, finding.kind
    )


def unknown_parts(content: dict[str, Any]) -> list[Problem]:
    """Parts a variant does not have (``email.body``), and variants that do not exist."""
    found = []
    for locale, variant, part, _ in _parts(content):
        if variant == SHARED:
            continue
        if variant not in VARIANT_PARTS:
            known = ", ".join([*VARIANT_PARTS, SHARED])
            found.append(
                Problem(
                    variant, part, locale, None, None, f"unknown variant; known: {known}", "unknown"
                )
            )
        elif part not in VARIANT_PARTS[variant]:
            known = ", ".join(VARIANT_PARTS[variant])
            found.append(
                Problem(
                    variant,
                    part,
                    locale,
                    None,
                    None,
                    f"{variant} has no part {part!r}; its parts: {known}",
                    "unknown",
                )
            )
    return found


def diff(name: str, old: TemplateVersion, new: TemplateVersion) -> str:
    """A unified diff of two versions, part by part."""
    lines: list[str] = []
    before, after = dict(_flat(old.content)), dict(_flat(new.content))
    for path in sorted(set(before) | set(after)):
        lines += difflib.unified_diff(
            before.get(path, "").splitlines(keepends=True),
            after.get(path, "").splitlines(keepends=True),
            fromfile=f"{name}@{old.version}/{path}",
            tofile=f"{name}@{new.version}/{path}",
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _flat(content: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for locale, variant, part, source in _parts(content):
        yield f"{locale + '/' if locale else ''}{variant}/{part}", source


def preview(
    current: TemplateSet,
    settings: Settings,
    name: str,
    channel: str,
    data: dict[str, Any] | None,
    event_type: str | None,
    locale: str | None,
) -> tuple[Rendered, dict[str, str | int]]:
    """Render ``name`` for ``channel`` with sample data, and what it costs (SMS segments).

    ``channel`` may also be ``alert``, as in subscriptions: the alert variant.
    """
    context = sample_context(settings, event_type, data)
    if channel == ALERT:
        return current.render(name, "alert", context, locale), {}
    kind = settings.channel_classes[channel]
    rendered = current.render(name, kind.variant, context, locale)
    return rendered, kind.describe(rendered.text)
