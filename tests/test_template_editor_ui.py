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
  change, save, see the version, roll back.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from starlette.responses import Response

from hub import keys
from hub.settings import get_settings
from hub.ui.sessions import COOKIE, Sessions
from tests.conftest import Stack, run_hub, wait_until

ROOT = Path(__file__).parent.parent
CHROMIUM = Path("/usr/bin/chromium")
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
