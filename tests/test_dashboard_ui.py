"""Spec: the dashboard at /ui/, behind the editor's admin login, over HTTP and in a real browser.

- ``/ui/`` (and ``/ui``) without a session redirects (303) to ``/ui/login``;
  with one it is the dashboard, linked with the template editor both ways,
  served with local assets only.
- In headless Chromium (Debian's ``/usr/bin/chromium``, never ``playwright install``),
  after a run: the sent count for email, a failure with its error, the
  circuits, an event's trace (event, notifications, attempts) entered with
  the keyboard, and a dead letter retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser import browser_page, log_in, screenshot
from tests.conftest import Stack
from tests.test_publish_to_email import address, user


def _browser_like(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=10, follow_redirects=False)


# ---- Over HTTP ------------------------------------------------------------------------------


def test_the_dashboard_needs_a_session(stack: Stack) -> None:
    with _browser_like(stack) as http:
        for path in ("/ui/", "/ui"):
            response = http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/ui/login", path


def test_the_dashboard_is_linked_with_the_editor_and_serves_local_assets(stack: Stack) -> None:
    with _browser_like(stack) as http:
        assert http.post("/ui/login", data={"api_key": stack.api_key}).status_code == 303
        page = http.get("/ui/")
        editor = http.get("/ui/templates")

        assert page.status_code == 200, page.text
        assert 'data-testid="dashboard"' in page.text
        assert '<meta name="csrf-token"' in page.text
        assert "/ui/static/dashboard.js" in page.text
        assert 'href="/ui/" data-testid="nav-dashboard" aria-current="page"' in page.text
        assert 'data-testid="nav-templates"' in editor.text
        assert 'href="/ui/"' in editor.text
        for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert asset.startswith("/ui/"), asset  # no CDN, no remote asset
            assert http.get(asset).status_code == 200, asset
        assert "script-src 'self'" in page.headers["content-security-policy"]


# ---- In a real browser ----------------------------------------------------------------------


@pytest.fixture
def page(stack: Stack) -> Iterator[Any]:
    with browser_page(stack.base_url) as page:
        yield page


def test_the_dashboard_shows_counts_failures_circuits_and_a_trace(stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    # Given a run: two welcome emails sent, one rejected by the SMTP server.
    for _ in range(2):
        stack.settled(stack.publish("user.registered", user(address("dash"))))
    rejected = address("reject")
    failed_event = stack.settled(stack.publish("user.registered", user(rejected)))
    [failed] = failed_event["notifications"]

    # When the admin logs in and opens the dashboard from the editor's nav,
    log_in(page, stack.api_key, "/ui/")
    page.get_by_test_id("nav-dashboard").click()
    expect(page).to_have_url(re.compile(r"/ui/$"))

    # Then the counts are there, per channel,
    expect(page.get_by_test_id("sent-email")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.get_by_test_id("failed-email")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.get_by_test_id("failure-rate-email")).to_have_text(re.compile(r"%$"))
    expect(page.get_by_test_id("chart-email").locator("svg rect.sent").first).to_be_visible()
    expect(page.get_by_test_id("queue-email")).to_be_visible()
    expect(page.get_by_test_id("queue-chart").locator("svg polyline")).to_have_count(1)
    # with the circuits,
    circuit = page.locator("[data-testid^=circuit-email-]").first
    expect(circuit.get_by_test_id("circuit-state")).to_have_text(re.compile("closed|open"))
    # and the failure with its error.
    failure = page.locator(f"[data-testid=failure-row][data-notification='{failed['id']}']")
    expect(failure).to_contain_text(rejected)
    expect(failure.get_by_test_id("failure-error")).to_have_text(re.compile(r"\S"))
    screenshot(page, "dashboard.png", for_readme=True)

    # An event's trace, with the keyboard: event -> notification -> attempts.
    page.get_by_test_id("trace-id").focus()
    page.keyboard.type(failed_event["id"])
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("trace-event")).to_contain_text(failed_event["id"])
    [notification] = page.get_by_test_id("trace-notification").all()
    expect(notification.get_by_test_id("trace-notification-status")).to_have_text("failed")
    expect(notification.get_by_test_id("trace-attempt")).to_have_count(1)
    expect(notification.get_by_test_id("trace-attempt")).to_contain_text("failed")
    screenshot(page, "dashboard-trace.png")

    # A dead letter is retried from its row (the server rejects it again).
    dead = page.locator(f"[data-testid=dead-letter-row][data-notification='{failed['id']}']")
    dead.get_by_test_id("retry-button").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("retry-result")).to_have_text(f"Requeued {failed['id']}.")
    resent = stack.settled(failed_event["id"])["notifications"][0]
    assert [a["outcome"] for a in resent["attempt_log"]] == ["failed", "failed"]
