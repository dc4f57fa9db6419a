"""Headless Chromium for the web pages' specs: Debian's chromium, never `playwright install`.

Without Chromium or the playwright package the browser specs skip, unless
HUB_TEST_REQUIRE_SERVICES=1 makes that a failure (CI installs Debian's chromium).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import missing_service

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
README_IMAGES = ROOT / "docs"


@contextmanager
def browser_page(base_url: str) -> Iterator[Any]:
    """A page in a fresh headless Chromium; any script error in it fails the test."""
    if not CHROMIUM.exists():
        missing_service(f"the browser test needs Debian's chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("the browser test needs the playwright package (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # CI runs as root, where Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1100})
        context.set_default_timeout(15_000)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            yield page
        finally:
            browser.close()
        assert not problems, f"script errors in the page: {problems}"


def log_in(page: Any, api_key: str, path: str = "/ui/templates") -> None:
    """Open ``path``, be sent to the login, log in with ``api_key`` and land back on it."""
    from playwright.sync_api import expect

    page.goto(path)
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.get_by_test_id("login-key").fill(api_key)
    page.get_by_test_id("login-key").press("Enter")


def screenshot(page: Any, name: str, for_readme: bool = False) -> Path:
    """The page under var/screenshots/ (CI keeps it); with ``for_readme``, also the README's
    copy in docs/, but only with HUB_TEST_UPDATE_SCREENSHOTS=1, so a run leaves the checkout
    clean."""
    path = SCREENSHOTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if for_readme and os.environ.get("HUB_TEST_UPDATE_SCREENSHOTS") == "1":
        README_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(path, README_IMAGES / name)
    return path
