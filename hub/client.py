"""A small Python client for publishing events to a running hub over HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

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
        self,
        event_type: str,
        data: dict[str, Any],
        id: str | None = None,
        *,
        recipients: Sequence[str | Mapping[str, Any]] = (),
        topics: Sequence[str] = (),
        deliver_at: datetime | None = None,
        cancellation_key: str | None = None,
    ) -> dict[str, Any]:
        """Publish one event; returns ``{"id", "status", "duplicate"}``.

        ``recipients`` are ids or inline recipients (stored as given) and
        ``topics`` topic keys: subscriptions without a ``to`` send to each.
        ``deliver_at`` (aware) holds its notifications until then;
        ``cancellation_key`` lets :meth:`cancel` stop what is not sent yet.
        Raises :class:`httpx.HTTPStatusError` on 4xx/5xx; a 422's body names the field.
        """
        body: dict[str, Any] = {"type": event_type, "data": data}
        if id is not None:
            body["id"] = id
        if recipients:
            body["recipients"] = list(recipients)
        if topics:
            body["topics"] = list(topics)
        if deliver_at is not None:
            body["deliver_at"] = deliver_at.isoformat()
        if cancellation_key is not None:
            body["cancellation_key"] = cancellation_key
        return self._call("POST", "/v1/events", body)

    def cancel(self, cancellation_key: str) -> dict[str, Any]:
        """Stop what the events published with ``cancellation_key`` have not sent yet."""
        return self._call("POST", "/v1/cancel", {"cancellation_key": cancellation_key})

    def event(self, event_id: str) -> dict[str, Any]:
        """The event with its notifications and their attempts."""
        return self._call("GET", f"/v1/events/{event_id}")

    def put_recipient(self, recipient_id: str, **fields: Any) -> dict[str, Any]:
        """Create or merge a recipient (``email``, ``phone``, ...); a ``None`` field clears it."""
        return self._call("PUT", f"/v1/recipients/{quote(recipient_id, safe='')}", fields)

    def recipient(self, recipient_id: str) -> dict[str, Any]:
        """The stored recipient."""
        return self._call("GET", f"/v1/recipients/{quote(recipient_id, safe='')}")

    def add_to_topic(self, topic: str, recipient_ids: Sequence[str]) -> dict[str, Any]:
        """Add known recipients to ``topic`` (a union with its members)."""
        body = {"recipients": list(recipient_ids)}
        return self._call("PUT", f"/v1/topics/{quote(topic, safe='')}/recipients", body)

    def subscribe(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Create a subscription at run time (``POST /v1/subscriptions``)."""
        return self._call("POST", "/v1/subscriptions", dict(definition))

    def unsubscribe(self, name: str) -> None:
        """Delete a run-time subscription."""
        response = self._http.delete(f"/v1/subscriptions/{quote(name, safe='')}")
        response.raise_for_status()

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return dict(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
