"""What each channel provider is doing: ``GET /v1/channels``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from hub.api.auth import Access
from hub.circuit import CircuitBreakers
from hub.middleware.circuit import circuit_name
from hub.settings import Settings
from hub.store import backlog
from hub.store.db import session


class ChannelState(BaseModel):
    channel: str
    provider: str
    state: Literal["closed", "open", "half_open"]
    since: datetime | None
    last_error: str | None
    waiting: int


class ChannelList(BaseModel):
    items: list[ChannelState]
    next_cursor: str | None = None


def add_channel_routes(
    app: FastAPI, settings: Settings, breakers: CircuitBreakers, access: Access
) -> None:
    @app.get("/v1/channels", dependencies=[Depends(access.read)])
    def list_channels() -> ChannelList:
        """Each channel provider's circuit, since when, its last error and what waits on it."""
        with session(settings.resolved_database_url) as db:
            waiting = backlog.waiting_by_channel(db)
        items = []
        for channel in settings.channel_classes:
            for provider in settings.channels.of(channel).all_providers:
                circuit = breakers.state(circuit_name(channel, provider.name))
                items.append(
                    ChannelState(
                        channel=channel,
                        provider=provider.name,
                        state=circuit.state,
                        since=circuit.since,
                        last_error=circuit.last_error or None,
                        waiting=waiting.get(channel, 0),
                    )
                )
        return ChannelList(items=items)
