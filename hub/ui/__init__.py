"""The web editor at ``/ui/``: templates edited, previewed, saved and rolled back in a browser.

- :mod:`hub.ui.sessions`: an admin key exchanged for a signed session cookie, and its CSRF token;
- :mod:`hub.ui.routes`: the login, the pages and their static files (``hub/ui/static``).

The pages are shells: their script (``static/editor.js``, no framework, no
CDN) calls the ``/v1/templates`` API with the session cookie, as any client
would with a key. Nothing is imported here, so :mod:`hub.api.auth` can use
the sessions without importing the routes.
"""
