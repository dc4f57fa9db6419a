"""A running hub whose extra subscriptions build addresses and headers from event data.

The shipped catalog validates ``user.registered`` at publish, so a bad address
there may never reach routing. The events below carry no schema: whatever
their data holds reaches the ``to`` expressions and templates, which is the
render-time path this suite checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hub.settings import bundled_path
from tests.conftest import TEST_SETTINGS, Stack, other_redis_db, running_stack
from tests.smtp_sink import SmtpSink


@contextmanager
def hostile_stack(
    home: Path,
    broker_url: str,
    smtp: SmtpSink,
    settings: str,
    templates: dict[str, dict[str, str]],
) -> Iterator[Stack]:
    """A stack with ``settings`` appended to the test settings and ``templates`` added.

    ``templates`` maps a template name to its parts (``{"subject.txt": ...}``).
    It runs on its own Redis database, so it never takes the session stack's tasks.
    """
    folder = home / "hostile-templates"
    for name, parts in templates.items():
        for part, source in parts.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / part).write_text(source)
    settings_file = home / "hostile-settings.toml"
    settings_file.write_text(bundled_path("settings.toml").read_text() + TEST_SETTINGS + settings)
    extra_env = {
        "HUB_SETTINGS": str(settings_file),
        "HUB_TEMPLATE_DIRS": f'["{folder}", "{home / "templates"}"]',
    }
    with running_stack(home, other_redis_db(broker_url), smtp, extra_env) as stack:
        yield stack
