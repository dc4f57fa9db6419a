"""The web editor at ``/ui/``: templates edited, previewed, saved and rolled back in a browser.

- :mod:`hub.ui.routes`: the login, the pages and their static files (``hub/ui/static``);
- the session cookie they log in to, and its CSRF token, are the API's own
  (:mod:`hub.api.sessions`), since every API route accepts it.

The pages are shells: their script (``static/editor.js``, no framework, no
CDN) calls the ``/v1/templates`` API with the session cookie, as any client
would with a key.
"""
