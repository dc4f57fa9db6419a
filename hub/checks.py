"""What `hub check` and `hub up` verify before anything runs.

Settings load and validate (their errors name file and line); every template
file compiles; every subscription names a known event type and a template
that exists, its expressions parse, and where the event type has an
``example`` its template renders with it. Each problem is one line naming
where it is, so a broken file stops start-up at once with the reason,
instead of a worker that keeps failing to start.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from hub.errors import ConfigError, TemplateError
from hub.routing import check_subscriptions
from hub.settings import ALERT, Settings, settings_path
from hub.templates import Templates, TemplateSet, context_for, from_files


def problems(settings: Settings) -> list[str]:
    """Every problem found in ``settings``' subscriptions and templates, one line each."""
    templates = Templates()
    found = _template_files(settings.all_template_dirs, templates)
    if found:
        return found
    try:
        files = from_files(settings.all_template_dirs)
    except ConfigError as exc:
        return [str(exc)]
    try:
        check_subscriptions(settings, templates, files.variants)
    except ConfigError as exc:
        found.append(f"{settings_path()}: {exc}")
    found += _rendered_examples(settings, files)
    return found


def _template_files(dirs: list[Path], templates: Templates) -> list[str]:
    """A line per template file that does not compile, naming its file and line."""
    found = []
    for root in dirs:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            name = path.relative_to(root).as_posix()
            try:
                templates.env.parse(path.read_text(encoding="utf-8"), name, str(path))
            except jinja2.TemplateSyntaxError as exc:
                found.append(f"{path}:{exc.lineno}: {exc.message}")
            except UnicodeDecodeError:
                found.append(f"{path}: not UTF-8 text")
    return found


def _rendered_examples(settings: Settings, files: TemplateSet) -> list[str]:
    """A line per subscription whose template fails on its event type's example data."""
    found = []
    for index, subscription in enumerate(settings.subscriptions):
        event = settings.events.get(subscription.event)
        if event is None or event.example is None:
            continue
        alert = subscription.channel == ALERT
        channels = settings.channels.alert_targets if alert else [subscription.channel]
        context = context_for("evt_check", subscription.event, event.example)
        if subscription.digest is not None:
            # A digest renders with the events folded into it (hub.delivery).
            context.update(events=[event.example], count=1)
        for channel in channels:
            variant = settings.channel_classes[channel].variant
            try:
                files.render(subscription.template, variant, context)
            except TemplateError as exc:
                where = f"subscriptions[{index}] ({subscription.name!r})"
                found.append(f"{settings_path()}: {where}: with the example data: {exc}")
    return found
