"""Sandboxed Jinja rendering of notification templates.

A template is a folder named after it, holding one file per part:
``subject.txt``, ``body.txt``, ``body.html``. Folders starting with ``_`` hold
shared layouts and partials. Variables are strict: a missing one raises
:class:`~hub.errors.TemplateError` instead of sending half a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
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


class Templates:
    """Compiled templates for one process; Jinja caches each compiled file."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=False,
            cache_size=1000,
            auto_reload=False,
        )
        self._expressions: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: dict[str, Any], required: Sequence[str]) -> Rendered:
        """Render template ``name``; every part in ``required`` must exist."""
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
        except jinja2.UndefinedError as exc:
            raise TemplateError(name, f"{part}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(name, f"{part}: {exc}") from exc

    def preview(
        self, name: str, event_type: str, data: dict[str, Any], channel: type[Channel[Any]]
    ) -> tuple[Rendered, dict[str, str | int]]:
        """Render ``name`` with sample ``data`` as ``channel`` would send it, and what it costs."""
        context = context_for("evt_preview", event_type, data)
        rendered = self.render(name, context, channel.parts)
        return rendered, channel.describe(rendered.text)

    def expression(self, source: str, context: dict[str, Any]) -> str:
        """Render a one-line template such as a recipient ``{{ data.email }}``."""
        try:
            return self._compiled(source).render(context).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(source, str(exc)) from exc

    def condition(self, source: str, context: dict[str, Any]) -> bool:
        """Evaluate a Jinja expression such as ``data.phone is defined``."""
        try:
            return self._compiled(f"{{% if {source} %}}1{{% endif %}}").render(context) == "1"
        except jinja2.TemplateError as exc:
            raise TemplateError(source, str(exc)) from exc

    def _compiled(self, source: str) -> jinja2.Template:
        # Subscriptions repeat the same few expressions: compile each once.
        if (template := self._expressions.get(source)) is None:
            template = self._expressions[source] = self.env.from_string(source)
        return template
