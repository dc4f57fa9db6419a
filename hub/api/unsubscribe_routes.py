"""One-click unsubscribe: ``/v1/unsubscribe/{token}``, the link in every email of a category.

No API key: the signed token (:mod:`hub.links`) is the authority, scoped to
one recipient and one category. ``POST``, with RFC 8058's body
``List-Unsubscribe=One-Click`` or none, turns that category off in the
recipient's preferences, as ``PUT /v1/recipients/{id}`` with
``{"preferences": {"categories": {"<category>": false}}}`` would; later
notifications of it are ``suppressed`` with reason ``category_off``, and a
``PUT`` can turn it back on. ``GET`` shows a page whose button POSTs and
changes nothing: mail scanners and link previews fetch every link.

A token that is forged, tampered or malformed gets 404, saying no more.
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hub import links, recipients
from hub.recipients import RecipientError
from hub.settings import Settings
from hub.store import recipients as stored
from hub.store.db import session

NOT_FOUND = "no such unsubscribe link"
# The token is in the URL: keep it out of caches, referrers and search
# indexes, and the button out of other sites' frames (clickjacking).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>Unsubscribe</title></head>
<body><h1>Unsubscribe</h1>{body}</body></html>
"""
_ASK = """<p>Stop receiving emails about <strong>{category}</strong>?</p>
<form method="post" action="{token}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>"""
_DONE = "<p>You will no longer receive emails about <strong>{category}</strong>.</p>"


def add_unsubscribe_routes(app: FastAPI, settings: Settings) -> None:
    links.secret_key(settings)  # a missing or unusable key fails here, at start-up

    @app.get("/v1/unsubscribe/{token}", response_class=HTMLResponse)
    def confirm_unsubscribe(token: str) -> Response:
        """A page asking to confirm; its button POSTs here. Nothing changes on a GET."""
        _, category = _read(settings, token)
        # The action is relative: the same URL, whatever prefix a proxy serves it under.
        ask = _ASK.format(category=escape(category), token=escape(token))
        return HTMLResponse(_PAGE.format(body=ask), headers=PAGE_HEADERS)

    @app.post("/v1/unsubscribe/{token}")
    def unsubscribe(token: str, request: Request) -> Response:
        """Turn the token's category off for its recipient (RFC 8058 one-click).

        The body is not read: a one-click POST carries ``List-Unsubscribe=One-Click``,
        others none, and the token alone decides. Doing it twice is doing it once; a
        recipient deleted since gets nothing anyway, and is not created again.
        """
        recipient_id, category = _read(settings, token)
        try:
            patch = {"preferences": {"categories": {category: False}}}
            change = recipients.parse(patch, recipient_id)
        except RecipientError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND) from None
        with session(settings.resolved_database_url) as db:
            if stored.get_recipient(db, recipient_id) is not None:
                stored.upsert_recipients(db, [change])
        if "text/html" in request.headers.get("accept", ""):
            done = _DONE.format(category=escape(category))
            return HTMLResponse(_PAGE.format(body=done), headers=PAGE_HEADERS)
        return JSONResponse({"status": "unsubscribed", "category": category})


def _read(settings: Settings, token: str) -> tuple[str, str]:
    """``(recipient id, category)`` of ``token``; 404 for any token the hub did not sign."""
    found = links.read_unsubscribe(settings, token)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return found
