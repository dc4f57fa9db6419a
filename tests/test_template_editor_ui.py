"""Spec: the web editor at /ui/, behind an admin login, tried over HTTP and in a real browser.

- ``POST /ui/login`` with an admin key's ``api_key`` sets a signed session cookie
  (HttpOnly, SameSite=Strict, Path=/, Secure only behind an https public_url)
  and redirects to ``/ui/templates``; a wrong key gets the form again with 401,
  a key without ``admin`` with 403.
- With the cookie, the API answers as for the key; a write also needs
  ``X-CSRF-Token`` (in the page's ``<meta name="csrf-token">``), else 403.
  Revoking the key ends its sessions; ``POST /ui/logout`` drops the cookie.
- Pages without a session redirect (303) to ``/ui/login``.
- In headless Chromium (Debian's ``/usr/bin/chromium``, never ``playwright install``):
  log in, break a template, see the error at its line, fix it, see the preview
  change, save, see the version, roll back; save a draft (the active version
  stays), preview it from the list, publish it; remove a part (confirmed inline,
  from the keyboard) and save without it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from hub import keys
from hub.api.sessions import COOKIE, Sessions
from hub.settings import get_settings
from tests.browser import browser_page, log_in, screenshot
from tests.conftest import (
    Stack,
    other_redis_db,
    run_hub,
    running_stack,
    wait_until,
)
from tests.smtp_sink import SmtpSink

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
PREVIEW = {"channel": "email", "data": {"user_id": "u1", "email": "a@example.com", "name": "Ada"}}


def _browser_like(stack: Stack) -> httpx.Client:
    """A client without a key, keeping cookies as a browser would."""
    return httpx.Client(base_url=stack.base_url, timeout=10, follow_redirects=False)


@contextmanager
def _logged_in(stack: Stack, key: str | None = None) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a session of ``key`` (the stack's admin key), and the page's CSRF token."""
    with _browser_like(stack) as http:
        response = http.post("/ui/login", data={"api_key": key or stack.api_key})
        assert response.status_code == 303, response.text
        page = http.get("/ui/templates")
        assert page.status_code == 200, page.text
        match = CSRF_META.search(page.text)
        assert match, page.text
        yield http, match.group(1)


def _set_cookie(response: httpx.Response) -> str:
    headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]
    assert len(headers) == 1, headers
    return headers[0]


# ---- Login and session -------------------------------------------------------------


def test_login_sets_an_httponly_samesite_strict_cookie_and_redirects(stack: Stack) -> None:
    with _browser_like(stack) as http:
        response = http.post("/ui/login", data={"api_key": stack.api_key})

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/templates"
    cookie = _set_cookie(response)
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # the stack's public URL is http
    assert stack.api_key not in cookie


def test_the_cookie_is_secure_behind_an_https_public_url(stack: Stack) -> None:
    settings = get_settings()
    https = settings.model_copy(
        update={"api": settings.api.model_copy(update={"public_url": "https://hub.example.com"})}
    )
    response = Response()

    Sessions.from_settings(https).set_cookie(response, "value")

    assert "; secure" in response.headers["set-cookie"].lower()


def test_a_wrong_key_gets_the_form_again_with_401(stack: Stack) -> None:
    with _browser_like(stack) as http:
        response = http.post("/ui/login", data={"api_key": "hub_not-a-key"})

    assert response.status_code == 401
    assert 'name="api_key"' in response.text
    assert 'data-testid="login-error"' in response.text
    assert "set-cookie" not in response.headers


def test_a_key_without_admin_cannot_log_in(stack: Stack) -> None:
    reader = keys.create_key(stack.database_url, f"reader-{uuid.uuid4().hex[:8]}", scopes=["read"])
    with _browser_like(stack) as http:
        response = http.post("/ui/login", data={"api_key": reader})

    assert response.status_code == 403
    assert "admin" in response.text
    assert "set-cookie" not in response.headers


def test_a_login_form_from_another_site_is_refused(stack: Stack) -> None:
    with _browser_like(stack) as http:
        response = http.post(
            "/ui/login", data={"api_key": stack.api_key}, headers={"Sec-Fetch-Site": "cross-site"}
        )

    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_pages_without_a_session_redirect_to_the_login(stack: Stack) -> None:
    with _browser_like(stack) as http:
        for path in ("/ui/templates", "/ui/templates/user.registered", "/ui"):
            response = http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] in ("/ui/login", "/ui/templates"), path
        http.cookies.set(COOKIE, "forged.cookie")
        assert http.get("/ui/templates").status_code == 303
        login = http.get("/ui/login")
    assert login.status_code == 200
    assert 'data-testid="login-key"' in login.text


def test_pages_serve_local_assets_only(stack: Stack) -> None:
    with _logged_in(stack) as (http, _):
        page = http.get("/ui/templates/user.registered")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        for asset in assets:
            assert asset.startswith("/ui/"), asset  # no CDN, no remote asset
            assert http.get(asset).status_code in (200, 303), asset
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert 'sandbox=""' in page.text and "allow-scripts" not in page.text


def test_the_session_reads_like_its_key(stack: Stack) -> None:
    with _logged_in(stack) as (http, _):
        response = http.get("/v1/channels")
    assert response.status_code == 200, response.text


def test_a_write_with_the_session_needs_the_csrf_token(stack: Stack) -> None:
    with _logged_in(stack) as (http, csrf):
        without = http.post("/v1/templates/user.registered/preview", json=PREVIEW)
        wrong = http.post(
            "/v1/templates/user.registered/preview", json=PREVIEW, headers={"X-CSRF-Token": "x"}
        )
        right = http.post(
            "/v1/templates/user.registered/preview", json=PREVIEW, headers={"X-CSRF-Token": csrf}
        )

    assert without.status_code == 403
    assert without.json() == {"detail": "missing or wrong CSRF token"}
    assert wrong.status_code == 403
    assert right.status_code == 200, right.text
    assert "Ada" in right.json()["text"]


def test_a_bearer_key_needs_no_csrf_token(stack: Stack) -> None:
    with stack.client() as http:
        response = http.post("/v1/templates/user.registered/preview", json=PREVIEW)
    assert response.status_code == 200, response.text


def test_revoking_the_key_ends_its_sessions(stack: Stack) -> None:
    name = f"editor-{uuid.uuid4().hex[:8]}"
    key = keys.create_key(stack.database_url, name)
    with _logged_in(stack, key) as (http, _):
        assert http.get("/v1/channels").status_code == 200
        assert run_hub(stack, "keys", "revoke", name).returncode == 0

        wait_until(lambda: http.get("/v1/channels").status_code == 401, 5, "the session to end")
        assert http.get("/ui/templates").status_code == 303


def test_logout_drops_the_cookie(stack: Stack) -> None:
    with _logged_in(stack) as (http, csrf):
        refused = http.post("/ui/logout", data={"csrf_token": "wrong"})
        assert refused.status_code == 403

        response = http.post("/ui/logout", data={"csrf_token": csrf})

        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login"
        assert COOKIE not in http.cookies
        assert http.get("/ui/templates").status_code == 303


# ---- In a real browser ---------------------------------------------------------------

SAMPLE = {"user_id": "u_42", "email": "ada@example.com", "name": "Ada"}
TEMPLATE = "user.registered"
BROKEN_LINE = 3


@pytest.fixture(scope="module")
def editor_stack(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> Iterator[Stack]:
    """A hub of its own: the browser test saves and rolls back a bundled template."""
    home = tmp_path_factory.mktemp("editor")
    # Its own Redis database: the session stack's worker must not take its tasks.
    with running_stack(home, other_redis_db(broker_url), smtp) as running:
        yield running


@pytest.fixture
def page(editor_stack: Stack) -> Iterator[Any]:
    with browser_page(editor_stack.base_url) as page:
        yield page


def _active(stack: Stack) -> dict[str, Any]:
    with stack.client() as http:
        response = http.get(f"/v1/templates/{TEMPLATE}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_edit_preview_save_and_roll_back_in_a_browser(editor_stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    original = _active(editor_stack)
    original_text = original["variants"]["email"]["text"]
    lines = original_text.split("\n")

    # Given a logged-in admin (pages without a session go to the login)
    _log_in(page, editor_stack)

    # When they open a bundled template's editor from the list
    page.get_by_test_id("template-list").get_by_role("link", name=TEMPLATE, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/ui/templates/{re.escape(TEMPLATE)}$"))
    expect(page.get_by_test_id("active-version")).to_have_text(f"active: v{original['version']}")
    page.get_by_test_id("sample-data").fill(json.dumps(SAMPLE))
    page.get_by_test_id("part-text").click()
    source = page.get_by_test_id("editor-source")
    expect(source).to_have_value(original_text)
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hi Ada,")

    # And break line 3 with an unclosed {{
    broken = lines.copy()
    broken[BROKEN_LINE - 1] += " {{ data.name"
    source.fill("\n".join(broken))

    # Then the error is marked at that line
    marker = page.get_by_test_id("error-marker")
    expect(marker).to_have_count(1)
    expect(marker).to_have_attribute("data-line", str(BROKEN_LINE))
    expect(page.get_by_test_id("errors")).to_contain_text(f"line {BROKEN_LINE}")
    screenshot(page, "template-editor-error.png")

    # When they fix it, changing the greeting, the preview follows
    fixed = lines.copy()
    fixed[0] = fixed[0].replace("Hi ", "Hello there, ", 1)
    source.fill("\n".join(fixed))
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hello there, Ada,")
    expect(page.get_by_test_id("error-marker")).to_have_count(0)

    # And save with a comment, from the keyboard
    page.get_by_test_id("comment").fill("A warmer greeting")
    source.press("Control+s")
    saved = original["version"] + 1
    expect(page.get_by_test_id("status")).to_have_text(f"Saved version {saved}.")
    item = page.locator(f'[data-testid="version-item"][data-version="{saved}"]')
    expect(item).to_contain_text("A warmer greeting")
    assert _active(editor_stack)["variants"]["email"]["text"] == "\n".join(fixed)

    # And the diff of the new version shows the change
    item.get_by_test_id("diff-button").click()
    expect(page.get_by_test_id("diff")).to_contain_text("+Hello there, {{ data.name }},")
    screenshot(page, "template-editor.png", for_readme=True)

    # When they roll back to the version before
    before = page.locator(f'[data-testid="version-item"][data-version="{original["version"]}"]')
    before.get_by_test_id("rollback").click()

    # Then the old content is active again, as a new version
    expect(page.get_by_test_id("status")).to_contain_text(f"Rolled back to v{original['version']}")
    active = _active(editor_stack)
    assert active["version"] == saved + 1
    assert active["variants"]["email"]["text"] == original_text
    expect(source).to_have_value(original_text)
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hi Ada,")


def test_a_new_locale_and_a_test_send_from_the_browser(
    editor_stack: Stack, page: Any, smtp: SmtpSink
) -> None:
    from playwright.sync_api import expect

    default_subject = _active(editor_stack)["variants"]["email"]["subject"]
    _log_in(page, editor_stack)
    page.goto(f"/ui/templates/{TEMPLATE}")
    page.get_by_test_id("sample-data").fill(json.dumps(SAMPLE))

    # When they add a French subject and save it
    page.get_by_test_id("new-locale").fill("fr")
    page.get_by_role("button", name="Add locale").click()
    expect(page.get_by_test_id("locale")).to_have_value("fr")
    page.get_by_test_id("part-subject").click()
    page.get_by_test_id("editor-source").fill("Bienvenue, {{ data.name }} !")
    expect(page.get_by_test_id("preview-subject")).to_have_text("Bienvenue, Ada !")
    page.get_by_test_id("comment").fill("French welcome")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("status")).to_contain_text("Saved version")

    # Then the locale has its own email variant, the default one unchanged
    active = _active(editor_stack)
    assert active["locales"]["fr"]["email"]["subject"] == "Bienvenue, {{ data.name }} !"
    assert active["variants"]["email"]["subject"] == default_subject

    # And the SMS variant previews with its segment count
    page.get_by_test_id("channel").select_option("sms")
    expect(page.get_by_test_id("preview-details")).to_contain_text("segments: 1")
    expect(page.get_by_test_id("preview-html")).to_be_hidden()
    page.get_by_test_id("channel").select_option("email")

    # And a test send of the saved French version arrives, marked as a test
    to = f"editor-{uuid.uuid4().hex[:8]}@example.com"
    page.get_by_test_id("test-to").fill(to)
    page.get_by_test_id("test-send").click()
    expect(page.get_by_test_id("test-result")).to_have_text(f"Sent a test to {to}.")
    smtp.wait_for(lambda sink: bool(sink.to(to)), 10)
    assert smtp.to(to)[0]["Subject"] == "[TEST] Bienvenue, Ada !"


def test_a_draft_stays_inactive_until_published_from_the_browser(
    editor_stack: Stack, page: Any
) -> None:
    from playwright.sync_api import expect

    # Given a template of its own at version 1
    name = _copy_of(editor_stack, TEMPLATE)
    original_text = _template(editor_stack, name)["variants"]["email"]["text"]
    edited = original_text.replace("Hi ", "Hello from a draft, ", 1)
    assert edited != original_text
    _log_in(page, editor_stack)
    page.goto(f"/ui/templates/{name}")
    expect(page.get_by_test_id("active-version")).to_have_text("active: v1")
    page.get_by_test_id("sample-data").fill(json.dumps(SAMPLE))

    # When they save an edit as a draft
    page.get_by_test_id("part-text").click()
    page.get_by_test_id("editor-source").fill(edited)
    page.get_by_test_id("comment").fill("Trying a new greeting")
    page.get_by_test_id("save-draft").click()

    # Then version 2 is saved but version 1 stays active
    expect(page.get_by_test_id("status")).to_have_text("Saved draft version 2 (v1 stays active).")
    active = _template(editor_stack, name)
    assert active["version"] == 1
    assert active["variants"]["email"]["text"] == original_text
    expect(page.get_by_test_id("active-version")).to_have_text("active: v1")

    # And the list marks the draft, and offers to publish it (not to roll back to it)
    draft = _version_item(page, 2)
    expect(draft.get_by_test_id("draft-badge")).to_have_text("draft")
    expect(draft.get_by_test_id("rollback")).to_have_count(0)
    expect(_version_item(page, 1).get_by_test_id("draft-badge")).to_have_count(0)
    draft.get_by_test_id("diff-button").click()
    expect(page.get_by_test_id("diff")).to_contain_text("+Hello from a draft, {{ data.name }},")

    # And each saved version previews from the list
    _version_item(page, 1).get_by_test_id("preview-version").click()
    expect(page.get_by_test_id("preview-state")).to_contain_text("saved v1")
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hi Ada,")
    draft.get_by_test_id("preview-version").click()
    expect(page.get_by_test_id("preview-state")).to_contain_text("saved v2, a draft")
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hello from a draft, Ada,")
    screenshot(page, "template-editor-draft.png")

    # When they publish it
    draft.get_by_test_id("publish").click()

    # Then the draft is the active version
    published = "Published v2: it is the active version now."
    expect(page.get_by_test_id("status")).to_have_text(published)
    active = _template(editor_stack, name)
    assert active["version"] == 2
    assert active["draft"] is False
    assert active["variants"]["email"]["text"] == edited
    expect(page.get_by_test_id("active-version")).to_have_text("active: v2")
    expect(_version_item(page, 2).get_by_test_id("draft-badge")).to_have_count(0)
    expect(page.get_by_test_id("editor-source")).to_have_value(edited)


def test_removing_a_part_from_the_browser(editor_stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    # Given a template of its own with an html part
    name = _copy_of(editor_stack, TEMPLATE)
    before = _template(editor_stack, name)["variants"]["email"]
    assert before.get("html"), before
    _log_in(page, editor_stack)
    page.goto(f"/ui/templates/{name}")
    expect(page.get_by_test_id("active-version")).to_have_text("active: v1")
    page.get_by_test_id("sample-data").fill(json.dumps(SAMPLE))
    page.get_by_test_id("part-html").click()
    expect(page.get_by_test_id("preview-html")).to_be_visible()

    # When they ask to remove it, the confirmation is inline and Escape cancels it
    remove = page.get_by_test_id("remove-part")
    remove.focus()
    remove.press("Enter")
    confirm = page.get_by_test_id("remove-part-confirm")
    expect(confirm).to_be_focused()
    confirm.press("Escape")
    expect(confirm).to_be_hidden()
    expect(remove).to_be_focused()

    # And confirming from the keyboard removes it from the edits
    remove.press("Enter")
    expect(confirm).to_be_focused()
    confirm.press("Enter")
    expect(page.get_by_test_id("part-html")).to_have_class(re.compile(r"\bremoved\b"))
    expect(page.get_by_test_id("part-html")).to_be_focused()
    expect(remove).to_be_hidden()
    expect(page.get_by_test_id("preview-html")).to_be_hidden()
    expect(page.get_by_test_id("preview-text")).to_contain_text("Hi Ada,")

    # When they save
    page.get_by_test_id("comment").fill("Text only")
    page.get_by_test_id("save").click()

    # Then the saved version has no html part, and the others are unchanged
    expect(page.get_by_test_id("status")).to_have_text("Saved version 2.")
    saved = _template(editor_stack, name)
    assert saved["version"] == 2
    assert "html" not in saved["variants"]["email"]
    assert saved["variants"]["email"]["text"] == before["text"]
    assert saved["variants"]["email"]["subject"] == before["subject"]


def _template(stack: Stack, name: str) -> dict[str, Any]:
    with stack.client() as http:
        response = http.get(f"/v1/templates/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _copy_of(stack: Stack, name: str) -> str:
    """A new template with ``name``'s active content, at version 1."""
    original = _template(stack, name)
    copy = f"editor-copy-{uuid.uuid4().hex[:8]}"
    body = {
        "variants": original["variants"],
        "locales": original["locales"],
        "event_type": original["event_type"] or name,
        "comment": f"copy of {name}",
    }
    with stack.client() as http:
        response = http.put(f"/v1/templates/{copy}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    return copy


def _version_item(page: Any, version: int) -> Any:
    return page.locator(f'[data-testid="version-item"][data-version="{version}"]')


def _log_in(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    log_in(page, stack.api_key)
    expect(page).to_have_url(re.compile(r"/ui/templates$"))
