"""What stored templates cost: rendering an email, and switching every worker to a save.

Run by hand: ``python -m bench.templates [--renders 2000]``. On a SQLite store
in a temporary folder, with the bundled templates synced into it:

- render: the welcome email (``user.registered``: subject, text, and HTML
  extending ``_layouts/email.html`` with its CSS inlined) rendered
  ``--renders`` times, against a baseline measured in the same run, the
  same parts rendered by plain Jinja from the same sources (no store, no
  inlining, no text part made);
- claim: what a delivery batch pays to read the active versions at its claim
  (``Library.load``), with nothing new to read;
- switch: from the commit of a save until another process's library, as a
  worker's at its next claim, renders the new version.

It prints medians (and p99 where it matters) in microseconds and the ratio to
the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jinja2

from hub.settings import bundled_path
from hub.store.db import migrate, session
from hub.store.templates import add_version
from hub.templates import Library, context_for, sync_files

WELCOME = {"user_id": "u_1", "email": "ada@example.com", "name": "Ada Lovelace"}


def _timed(action: Callable[[], object], times: int) -> list[float]:
    took = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        took.append((time.perf_counter() - start) * 1e6)
    return sorted(took)


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-templates-"))
    url = f"sqlite:///{folder / 'hub.db'}"
    migrate(url)
    sync_files(url, [bundled_path("templates")])
    context = context_for("evt_bench", "user.registered", WELCOME)
    context["recipient"] = WELCOME["email"]

    library = Library()
    with session(url) as db:
        current = library.load(db)
    rendered = _timed(lambda: current.render("user.registered", "email", context), args.renders)

    plain = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(bundled_path("templates"))),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    parts = [
        plain.get_template(f"user.registered/{file}")
        for file in ("subject.txt", "body.txt", "body.html")
    ]
    baseline = _timed(lambda: [part.render(context) for part in parts], args.renders)

    def load() -> None:
        with session(url) as db:
            library.load(db)

    claims = _timed(load, 500)

    worker = Library()
    with session(url) as db:
        worker.load(db)
    switches = []
    for n in range(50):
        subject = f"Version {n}"
        with session(url) as db:
            add_version(
                db,
                "bench",
                {"variants": {"email": {"subject": subject, "text": "x"}}, "locales": {}},
                event_type=None,
                author="bench",
                comment="",
                draft=False,
                source="api",
            )
        committed = time.perf_counter()
        with session(url) as db:
            seen = worker.load(db).render("bench", "email", {}).subject
        assert seen == subject, (seen, subject)
        switches.append((time.perf_counter() - committed) * 1e6)
    switches.sort()

    render_median, base_median = statistics.median(rendered), statistics.median(baseline)
    print(f"render welcome email (layout, CSS inlined), {args.renders} times:")
    print(f"  hub     median {render_median:8.0f} us   p99 {_p(rendered, 0.99):8.0f} us")
    print(f"  jinja   median {base_median:8.0f} us   p99 {_p(baseline, 0.99):8.0f} us  (baseline)")
    print(f"  ratio   {render_median / base_median:.1f}x the baseline")
    print(f"claim: read active versions, median {statistics.median(claims):.0f} us")
    print(
        f"switch: save commit -> another library renders it, median "
        f"{statistics.median(switches):.0f} us, max {switches[-1]:.0f} us (50 saves)"
    )


if __name__ == "__main__":
    main()
