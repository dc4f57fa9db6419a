"""The web UI's routes: ``/ui/login``, ``/ui/logout``, ``/ui/`` (the dashboard) and
``/ui/templates[/{name}]`` (the template editor).

A page without a valid session redirects (303) to ``/ui/login``. The login
takes an admin API key from a form and answers with the session cookie
(:mod:`hub.api.sessions`); a wrong key gets the form again, with 401 (403 for
a key without the admin scope). Logging in and out are ``POST``s only, from
this site (``Sec-Fetch-Site``; logging out also checks the CSRF token).

The pages hold no data: their script fetches it from the API (``/v1/templates``;
the dashboard ``/v1/stats``, ``/v1/channels``, ``/v1/notifications`` and
``/v1/events``) with the cookie, sending the CSRF token of
``<meta name="csrf-token">`` on writes.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hub import keys
from hub.api.auth import Access
from hub.api.sessions import COOKIE, Sessions, UiSession
from hub.keys import Principal
from hub.settings import Settings

STATIC_DIR = Path(str(files("hub.ui") / "static"))
LOGIN = "/ui/login"
HOME = "/ui/templates"
DASHBOARD = "/ui/"
# The form is a few hundred bytes; anything longer is not ours.
MAX_FORM_BYTES = 4096
# Pages run only our own script and style; the preview's iframe (srcdoc, no
# scripts) inherits this, so a template's inline styles and images still show.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: https: http:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>{title} · hub</title>
<link rel="stylesheet" href="/ui/static/editor.css">
{styles}{script}</head>
<body{body_attrs}>
<header class="top"><a class="brand" href="/ui/">hub</a>{nav}{logout}</header>
<main id="main">{body}</main>
</body></html>
"""
_LOGOUT = """<form method="post" action="/ui/logout" class="logout">
<input type="hidden" name="csrf_token" value="{csrf}">
<span class="who">{who}</span> <button type="submit">Log out</button></form>"""
_LOGIN_FORM = """<section class="login">
<h1>Log in</h1>
<p>Enter an API key with the <code>admin</code> scope
(<code>hub keys create --scope admin</code>).</p>
{error}<form method="post" action="/ui/login">
<label for="api_key">API key</label>
<input id="api_key" name="api_key" type="password" autocomplete="off" required autofocus
 data-testid="login-key" spellcheck="false">
<button type="submit" data-testid="login-submit">Log in</button>
</form></section>"""
_NAV = """<nav class="nav" aria-label="Pages">
<a href="/ui/" data-testid="nav-dashboard"{dashboard}>Dashboard</a>
<a href="/ui/templates" data-testid="nav-templates"{templates}>Templates</a></nav>"""
_LOGIN_ERROR = '<p class="error" role="alert" data-testid="login-error">{message}</p>'
_LIST = """<h1>Templates</h1>
<p id="list-status" role="status">Loading…</p>
<ul class="template-list" data-testid="template-list"></ul>"""
_EDITOR_FILE = "editor.html"
_DASHBOARD_FILE = "dashboard.html"


def add_ui_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    """Mount the web editor; ``access`` must accept sessions (``Access.from_settings``)."""
    sessions = access.sessions
    if sessions is None:
        raise ValueError("the web editor needs an Access that accepts sessions")
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    _add_login_routes(app, access, sessions)
    _add_pages(app, access, sessions)


def _add_login_routes(app: FastAPI, access: Access, sessions: Sessions) -> None:
    @app.get(LOGIN, include_in_schema=False)
    def login_form() -> Response:
        return _page("Log in", _LOGIN_FORM.format(error=""))

    @app.post(LOGIN, include_in_schema=False)
    async def login(request: Request) -> Response:
        """Exchange an admin key for a session cookie, then go to the template list."""
        _same_site_only(request)
        key = (await _form(request)).get("api_key", "")
        try:
            principal = await access.login(key)
        except HTTPException as exc:
            error = _LOGIN_ERROR.format(message=escape(exc.detail))
            return _page("Log in", _LOGIN_FORM.format(error=error), exc.status_code)
        cookie, _ = sessions.issue(principal.name, keys.hash_key(key))
        response = RedirectResponse(HOME, status.HTTP_303_SEE_OTHER)
        sessions.set_cookie(response, cookie)
        return response

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        """Drop the cookie (the form carries the CSRF token: no other site logs you out)."""
        _same_site_only(request)
        session = sessions.read(request.cookies.get(COOKIE))
        token = (await _form(request)).get("csrf_token")
        if session is not None and not sessions.csrf_ok(session, token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
        response = RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER)
        sessions.clear_cookie(response)
        return response


def _add_pages(app: FastAPI, access: Access, sessions: Sessions) -> None:
    editor_body = (STATIC_DIR / _EDITOR_FILE).read_text(encoding="utf-8")
    dashboard_body = (STATIC_DIR / _DASHBOARD_FILE).read_text(encoding="utf-8")

    async def logged_in(request: Request) -> tuple[Principal, UiSession] | None:
        principal = await access.page_holder(request)
        session = sessions.read(request.cookies.get(COOKIE))
        return None if principal is None or session is None else (principal, session)

    @app.get("/ui", include_in_schema=False)
    @app.get(DASHBOARD, include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        found = await logged_in(request)
        if found is None:
            return RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER)
        principal, session = found
        return _page(
            "Dashboard",
            dashboard_body,
            csrf=sessions.csrf_token(session),
            who=principal.name,
            script="dashboard",
        )

    @app.get(HOME, include_in_schema=False)
    async def template_list(request: Request) -> Response:
        found = await logged_in(request)
        if found is None:
            return RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER)
        principal, session = found
        return _page("Templates", _LIST, csrf=sessions.csrf_token(session), who=principal.name)

    @app.get(HOME + "/{name:path}", include_in_schema=False)
    async def template_editor(request: Request, name: str) -> Response:
        found = await logged_in(request)
        if found is None:
            return RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER)
        principal, session = found
        return _page(
            name,
            editor_body.replace("{name}", escape(name)),
            csrf=sessions.csrf_token(session),
            who=principal.name,
            template=name,
        )


def _page(
    title: str,
    body: str,
    status_code: int = 200,
    csrf: str | None = None,
    who: str = "",
    template: str | None = None,
    script: str = "editor",
) -> HTMLResponse:
    """A page: the login form without a session, else with the page's script and the nav.

    ``script`` names the page's own script, and stylesheet beside the editor's
    (``dashboard``: ``dashboard.js`` and ``dashboard.css``).
    """
    meta = scripts = styles = logout = body_attrs = nav = ""
    if csrf is not None:
        meta = f'<meta name="csrf-token" content="{escape(csrf)}">\n'
        scripts = '<script src="/ui/static/api.js" defer></script>\n'
        scripts += f'<script src="/ui/static/{script}.js" defer></script>\n'
        styles = '<link rel="stylesheet" href="/ui/static/nav.css">\n'
        if script != "editor":
            styles += f'<link rel="stylesheet" href="/ui/static/{script}.css">\n'
        logout = _LOGOUT.format(csrf=escape(csrf), who=escape(who))
        current = ' aria-current="page"'
        on_dashboard = script == "dashboard"
        nav = _NAV.format(
            dashboard=current if on_dashboard else "", templates="" if on_dashboard else current
        )
    if template is not None:
        # The API path of the template, already escaped for a URL (names may hold "/").
        body_attrs = f' data-template="{escape(quote(template, safe=""))}"'
    page = _PAGE.format(
        meta=meta,
        title=escape(title),
        styles=styles,
        script=scripts,
        body_attrs=body_attrs,
        nav=nav,
        logout=logout,
        body=body,
    )
    return HTMLResponse(page, status_code, headers=PAGE_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form of a small POST (no multipart parser needed for one field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "too many form fields") from None
    return {name: values[0].strip() for name, values in fields.items()}


def _same_site_only(request: Request) -> None:
    """403 for a form another site submits (login CSRF): browsers say so in Sec-Fetch-Site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site form submissions are refused")
