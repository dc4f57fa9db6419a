"""Sandboxed Jinja rendering of notification templates.

A template is a folder named after it, holding one file per part:
``subject.txt``, ``body.txt``, ``body.html``. Folders starting with ``_`` hold
shared layouts and partials. Variables are strict: a missing one raises
:class:`~hub.errors.TemplateError` instead of sending half a message, and so
does any other exception while rendering (a sandbox limit, ``1 + "a"``, runaway
recursion): one bad template or datum fails its own notification, never its
batch or the worker.

Only ``.html`` files are HTML-escaped. Recipient expressions and conditions
are not: an address such as ``o'brien@example.com`` is rendered as written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from hub.errors import TemplateError

if TYPE_CHECKING:
    from hub.channels.base import Channel

PARTS = ("subject.txt", "body.txt", "body.html")


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


class _WholeFolders(jinja2.FileSystemLoader):
    """Each template folder comes whole from the first search path that has it.

    Jinja's own loader falls back file by file, so a user folder overriding a
    subject and text but no HTML would send the bundled HTML beside the new
    text. Here a part missing from the folder that won is missing.
    """

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        folder = template.split("/", 1)[0]
        for root in self.searchpath:
            if (Path(root) / folder).is_dir():
                return jinja2.FileSystemLoader(root).get_source(environment, template)
        raise jinja2.TemplateNotFound(template)


class Templates:
    """Compiled templates for one process; Jinja caches each compiled file."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.env = _Sandbox(
            loader=_WholeFolders([str(d) for d in dirs]),
            undefined=jinja2.StrictUndefined,
            # from_string (recipient expressions, conditions) must not escape:
            # "o'brien@..." would become "o&#39;brien@...".
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            keep_trailing_newline=False,
            cache_size=1000,
            auto_reload=False,
        )
        self._expressions: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: dict[str, Any], required: Sequence[str]) -> Rendered:
        """Render template ``name``; every part in ``required`` must exist.

        A subject is one line: each run of whitespace in it, line breaks
        included, becomes one space. So event data with CR or LF in a subject
        is sent with spaces there, never as a header of its own; failing the
        message instead would lose, say, an alert quoting a multi-line error.
        Raises :class:`TemplateError` for whatever goes wrong.
        """
        parts: dict[str, str | None] = {}
        for part in PARTS:
            try:
                template = self.env.get_template(f"{name}/{part}")
            except jinja2.TemplateNotFound:
                if part in required:
                    raise TemplateError(name, f"missing part {part}") from None
                parts[part] = None
                continue
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(name, f"{exc.filename}:{exc.lineno}: {exc.message}") from exc
            except Exception as exc:
                raise TemplateError(name, f"{part}: {_why(exc)}") from exc
            parts[part] = self._render(name, part, template, context)
        subject = parts["subject.txt"]
        return Rendered(
            text=parts["body.txt"] or "",
            subject=" ".join(subject.split()) if subject is not None else None,
            html=parts["body.html"],
        )

    def _render(
        self, name: str, part: str, template: jinja2.Template, context: dict[str, Any]
    ) -> str:
        try:
            return template.render(context).strip()
        except Exception as exc:
            raise TemplateError(name, f"{part}: {_why(exc)}") from exc

    def preview(
        self, name: str, event_type: str, data: dict[str, Any], channel: type[Channel[Any]]
    ) -> tuple[Rendered, dict[str, str | int]]:
        """Render ``name`` with sample ``data`` as ``channel`` would send it, and what it costs."""
        context = context_for("evt_preview", event_type, data)
        rendered = self.render(name, context, channel.parts)
        return rendered, channel.describe(rendered.text)

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
