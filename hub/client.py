"""A small Python client for publishing events to a running hub over HTTP."""

from __future__ import annotations

from typing import Any

import httpx


class HubClient:
    """Publish events and read their status.

    >>> hub = HubClient("http://127.0.0.1:8000", api_key="hub_...")
    >>> hub.publish("user.registered", {"user_id": "1", "email": "a@b.c", "name": "A"})
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    def publish(
        self, event_type: str, data: dict[str, Any], id: str | None = None
    ) -> dict[str, Any]:
        """Publish one event; returns ``{"id", "status", "duplicate"}``.

        Raises :class:`httpx.HTTPStatusError` on 4xx/5xx; a 422's body names the field.
        """
        body: dict[str, Any] = {"type": event_type, "data": data}
        if id is not None:
            body["id"] = id
        response = self._http.post("/v1/events", json=body)
        response.raise_for_status()
        return dict(response.json())

    def event(self, event_id: str) -> dict[str, Any]:
        """The event with its notifications and their attempts."""
        response = self._http.get(f"/v1/events/{event_id}")
        response.raise_for_status()
        return dict(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
