"""Sandboxed Jinja rendering: stored templates, and recipient expressions and conditions.

Templates live in the store (:mod:`hub.store.templates`), in versions. A
:class:`TemplateSet` is the active version of every template as of one moment
(delivery reads it when it claims a batch); it renders a template's variant
for a channel: ``email`` (subject, text, html), ``sms`` (body) or ``alert``
(title, body), in the recipient's locale (``fr-CA``, then ``fr``, then the
default), with layouts and partials (``{% extends "_layouts/email.html" %}``)
from the same moment. Versions never change, so each compiles once per process.

Variables are strict: a missing one raises :class:`~hub.errors.TemplateError`
instead of sending half a message, and so does any other exception while
rendering (a sandbox limit, ``1 + "a"``, runaway recursion): one bad template
or datum fails its own notification, never its batch or the worker.

Only HTML parts are HTML-escaped. Recipient expressions and conditions are
not: an address such as ``o'brien@example.com`` is rendered as written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy.exc import IntegrityError

from hub import email_html
from hub.errors import TemplateError
from hub.store import templates as stored_templates
from hub.store.db import session
from hub.template_files import SMS_SUFFIX, read_templates

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


def context_for(event_id: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What templates, recipient expressions and conditions can refer to."""
    return {"event": {"id": event_id, "type": event_type}, "data": data}


@dataclass(frozen=True, slots=True)
class Rendered:
    """The parts of one rendered template; absent optional parts are None."""

    text: str
    subject: str | None = None
    html: str | None = None

    def size_bytes(self) -> int:
        """The parts' total size in UTF-8 bytes (a lone surrogate counted, not refused)."""
        parts = [part for part in (self.text, self.subject, self.html) if part]
        return sum(len(part.encode(errors="surrogatepass")) for part in parts)


# Jinja's sandbox bounds range() but not what `*` and `**` build: one
# `{{ "a" * 10**9 }}` in a template would take a worker's memory.
MAX_REPEAT = 1_000_000
MAX_EXPONENT = 1000


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with sequence repetition and powers bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "*" and _repeated_length(left, right) > MAX_REPEAT:
            raise SecurityError(f"repeating a sequence beyond {MAX_REPEAT} items")
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


def _repeated_length(left: Any, right: Any) -> int:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            return len(sequence) * times
    return 0


VARIANT_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("body",),
    "alert": ("title", "body"),
}
# Parts a variant cannot go without (an email needs text or HTML as well).
REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject",),
    "sms": ("body",),
    "alert": ("body",),
}
SHARED = "files"  # the variant of layout and partial folders (names starting with "_")
# A variant a template lacks, rendered from another: an SMS (an escalation
# step, say) of a template without one sends its alert body.
FALLBACKS = {"sms": "alert"}
DEFAULT_LOCALE = "-"


def locale_chain(locale: str | None) -> list[str]:
    """Where to look for a locale, most specific first: ``fr-CA`` -> ``fr-CA``, ``fr``."""
    chain: list[str] = []
    parts = (locale or "").replace("_", "-").split("-")
    while parts and parts[0]:
        chain.append("-".join(parts))
        parts.pop()
    return chain


def variant_parts(
    content: dict[str, Any], variant: str, locale: str | None
) -> tuple[str, dict[str, str]] | None:
    """The locale chosen and the parts of ``variant`` in it, or None without that variant.

    A locale replaces the whole variant: a French subject never goes out
    beside the default text.
    """
    locales = content.get("locales") or {}
    for candidate in locale_chain(locale):
        found = locales.get(candidate, {}).get(variant)
        if found:
            return candidate, found
    found = (content.get("variants") or {}).get(variant)
    return (DEFAULT_LOCALE, found) if found else None


def _loader_name(name: str, key: str, locale: str, variant: str, part: str) -> str:
    suffix = ".html" if part == "html" else ".txt"
    return f"{name}@{key}/{locale}/{variant}/{part}{suffix}"


class _StoreLoader(jinja2.BaseLoader):
    """Sources from template contents: ``name@key/locale/variant/part.ext`` for a part,
    ``_folder/file`` for a layout or partial of the set being rendered."""

    def __init__(
        self, content: Callable[[str, str], dict[str, Any] | None], shared: dict[str, str]
    ) -> None:
        self._content = content
        self._shared = shared

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        head, _, rest = template.partition("/")
        source: str | None = None
        if "@" in head:
            name, key = head.rsplit("@", 1)
            locale, variant, part = rest.split("/")
            content = self._content(name, key) or {}
            parts = (
                (content.get("variants") or {}).get(variant)
                if locale == DEFAULT_LOCALE
                else (content.get("locales") or {}).get(locale, {}).get(variant)
            )
            source = (parts or {}).get(part.rsplit(".", 1)[0])
        elif head in self._shared:
            content = self._content(head, self._shared[head]) or {}
            source = (content.get("variants") or {}).get(SHARED, {}).get(rest)
        if source is None:
            raise jinja2.TemplateNotFound(template)
        # Versions never change: a compiled one is always up to date.
        return source, template, lambda: True


def sandbox(loader: jinja2.BaseLoader | None = None) -> _Sandbox:
    """The hub's sandboxed, strict environment (its optimizer folds no `*` or `**` either)."""
    return _Sandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        # from_string (recipient expressions, conditions) must not escape:
        # "o'brien@..." would become "o&#39;brien@...".
        autoescape=lambda name: bool(name) and str(name).endswith(".html"),
        keep_trailing_newline=False,
        cache_size=1000,
        auto_reload=False,
    )


# Versions no longer active kept per process (a preview of an old one, a batch
# claimed just before a save); the oldest read go first.
RETIRED_KEPT = 256


class Library:
    """One process's template versions and compiled templates, read from the store as needed.

    ``utm`` are query parameters added to every link of an email (``templates.utm``).
    """

    def __init__(self, utm: dict[str, str] | None = None) -> None:
        self.utm = utm or {}
        self._contents: dict[tuple[str, int], dict[str, Any]] = {}
        self._envs: dict[tuple[tuple[str, str], ...], _Sandbox] = {}

    def load(self, db: Session) -> TemplateSet:
        """The active version of every template, as of ``db``'s transaction."""
        active = stored_templates.active_versions(db)
        self.fetch(db, active.items())
        self._forget_retired(active)
        return TemplateSet(self, active)

    def _forget_retired(self, active: dict[str, int]) -> None:
        """Keep at most :data:`RETIRED_KEPT` versions no longer active: a long-lived
        process sees every save, and keeping them all would grow without bound."""
        retired = [key for key in self._contents if active.get(key[0]) != key[1]]
        for key in retired[: max(0, len(retired) - RETIRED_KEPT)]:
            del self._contents[key]

    def fetch(self, db: Session, wanted: Iterable[tuple[str, int]]) -> None:
        """Read the contents of versions not read yet (a version never changes)."""
        missing = [key for key in wanted if key not in self._contents]
        self._contents.update(stored_templates.contents(db, missing))

    def content(self, name: str, version: int) -> dict[str, Any] | None:
        return self._contents.get((name, version))

    def env(self, shared: dict[str, str]) -> _Sandbox:
        """The environment whose layouts and partials are these versions; one per combination."""
        key = tuple(sorted(shared.items()))
        if (env := self._envs.get(key)) is None:
            if len(self._envs) >= 8:
                self._envs.pop(next(iter(self._envs)))
            env = self._envs[key] = sandbox(_StoreLoader(self._by_key, dict(shared)))
        return env

    def _by_key(self, name: str, key: str) -> dict[str, Any] | None:
        return self._contents.get((name, int(key))) if key.isdigit() else None


class TemplateSet:
    """The templates as of one moment: their active versions, and unsaved edits to preview.

    ``edits`` maps a template name to content not saved yet; it renders in
    an environment of its own, so nothing unsaved is ever cached.
    """

    def __init__(
        self,
        library: Library,
        active: dict[str, int],
        edits: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._library = library
        self.active = active
        self._edits = edits or {}
        self._keys = {
            name: "edit" if name in self._edits else str(version)
            for name, version in active.items()
        }
        for name in self._edits:
            self._keys.setdefault(name, "edit")
        shared = {name: key for name, key in self._keys.items() if name.startswith("_")}
        if self._edits:
            self._env = sandbox(_StoreLoader(self._content, shared))
        else:
            self._env = library.env(shared)

    @property
    def env(self) -> jinja2.Environment:
        return self._env

    def part_name(self, name: str, locale: str, variant: str, part: str) -> str:
        """The name ``env`` knows one part of ``name`` by (its tracebacks carry it too)."""
        resolved = self.resolve(name) or name
        return _loader_name(resolved, self._keys.get(resolved, "edit"), locale, variant, part)

    def resolve(self, name: str) -> str | None:
        """The stored name for ``name``: itself, or ``x`` for today's SMS folder name ``x.sms``."""
        if name in self._keys:
            return name
        base = name.removesuffix(SMS_SUFFIX)
        return base if base != name and base in self._keys else None

    def version(self, name: str) -> int | None:
        """The version of ``name`` this set renders; None for unsaved edits or none at all."""
        resolved = self.resolve(name)
        return self.active.get(resolved) if resolved and resolved not in self._edits else None

    def content(self, name: str) -> dict[str, Any] | None:
        resolved = self.resolve(name)
        return self._content(resolved, self._keys[resolved]) if resolved else None

    def variants(self, name: str) -> set[str] | None:
        """The variants ``name`` renders, in some locale (fallbacks included); None if no such."""
        content = self.content(name)
        if content is None:
            return None
        found = {v for v, parts in (content.get("variants") or {}).items() if parts}
        for variants in (content.get("locales") or {}).values():
            found.update(v for v, parts in variants.items() if parts)
        return found | {v for v, fallback in FALLBACKS.items() if fallback in found}

    def render(
        self, name: str, variant: str, context: dict[str, Any], locale: str | None = None
    ) -> Rendered:
        """Render ``name``'s ``variant`` in ``locale`` (or the nearest it has).

        A subject is one line: each run of whitespace in it, line breaks
        included, becomes one space. So event data with CR or LF in a subject
        is sent with spaces there, never as a header of its own; failing the
        message instead would lose, say, an alert quoting a multi-line error.
        Raises :class:`TemplateError` for whatever goes wrong.
        """
        resolved = self.resolve(name)
        content = self.content(name)
        if resolved is None or content is None:
            raise TemplateError(name, "no such template")
        source = variant
        chosen = variant_parts(content, variant, locale)
        if chosen is None and (fallback := FALLBACKS.get(variant)):
            source, chosen = fallback, variant_parts(content, fallback, locale)
        if chosen is None:
            raise TemplateError(name, f"no {variant} variant")
        where, parts = chosen
        for part in REQUIRED_PARTS.get(variant, ()):
            if not parts.get(part):
                raise TemplateError(name, f"the {source} variant has no {part}")
        key = self._keys[resolved]
        out = {
            part: self._render(name, _loader_name(resolved, key, where, source, part), context)
            for part in VARIANT_PARTS.get(variant, tuple(parts))
            if part in parts
        }
        if variant == "email":
            return self._email(name, out)
        if variant == "alert":
            title = out.get("title")
            return Rendered(
                text=out["body"], subject=_one_line(title) if title is not None else None
            )
        return Rendered(text=out.get("body", ""))

    def _email(self, name: str, out: dict[str, str]) -> Rendered:
        """An email's parts finished: CSS inlined, a text part made from HTML if none, UTM."""
        html, text = out.get("html"), out.get("text")
        if html is None and text is None:
            raise TemplateError(name, "the email variant has neither text nor html")
        try:
            if html is not None:
                html = email_html.inline_css(html)
                if text is None:
                    text = email_html.text_from_html(html)
            if utm := self._library.utm:
                html = email_html.add_utm(html, utm) if html is not None else None
                text = email_html.add_utm_text(text or "", utm)
        except Exception as exc:
            raise TemplateError(name, f"html: {_why(exc)}") from exc
        return Rendered(text=text or "", subject=_one_line(out["subject"]), html=html)

    def _render(self, name: str, source_name: str, context: dict[str, Any]) -> str:
        part = source_name.rsplit("/", 1)[-1]
        try:
            template = self._env.get_template(source_name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(name, f"{part}:{exc.lineno}: {exc.message}") from exc
        except Exception as exc:
            raise TemplateError(name, f"{part}: {_why(exc)}") from exc
        try:
            return template.render(context).strip()
        except Exception as exc:
            raise TemplateError(name, f"{part}: {_why(exc)}") from exc

    def _content(self, name: str, key: str) -> dict[str, Any] | None:
        if key == "edit":
            return self._edits.get(name)
        return self._library.content(name, int(key))


def from_files(dirs: Sequence[Path]) -> TemplateSet:
    """The templates the files in ``dirs`` define, unsaved: what ``hub check`` renders."""
    found = read_templates(dirs)
    return TemplateSet(Library(), {}, {name: files.content for name, files in found.items()})


def sync_files(database_url: str, dirs: Sequence[Path]) -> list[str]:
    """Import the template files into the store where they changed; the names imported.

    Every process starting up syncs, so two may race to write one version:
    the loser's transaction fails on the key and it looks again, finding the
    winner's import.
    """
    found = read_templates(dirs)
    for attempt in range(3):
        try:
            with session(database_url) as db:
                imported = stored_templates.sync_files(db, found)
        except IntegrityError:
            if attempt == 2:
                raise
            continue
        if imported:
            log.info("template files imported as new versions: %s", ", ".join(imported))
        return imported
    return []


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Templates:
    """The sandbox for recipient expressions and conditions, each compiled once."""

    def __init__(self) -> None:
        self.env = sandbox()
        self._expressions: dict[str, jinja2.Template] = {}

    def expression(self, source: str, context: dict[str, Any]) -> str:
        """Render a one-line template such as a recipient ``{{ data.email }}``, unescaped."""
        try:
            return self._compiled(source).render(context).strip()
        except Exception as exc:
            raise TemplateError(source, _why(exc)) from exc

    def condition(self, source: str, context: dict[str, Any]) -> bool:
        """Evaluate a Jinja expression such as ``data.phone is defined``."""
        try:
            return self._compiled(f"{{% if {source} %}}1{{% endif %}}").render(context) == "1"
        except Exception as exc:
            raise TemplateError(source, _why(exc)) from exc

    def _compiled(self, source: str) -> jinja2.Template:
        # Subscriptions repeat the same few expressions: compile each once.
        if (template := self._expressions.get(source)) is None:
            template = self._expressions[source] = self.env.from_string(source)
        return template


def _why(exc: Exception, limit: int = 300) -> str:
    """What went wrong, for a TemplateError: Jinja's own words, else the exception's type too."""
    why = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
    # Bounded and on one line: it becomes a notification's reason and an alert's text.
    return " ".join(why.split())[:limit]
