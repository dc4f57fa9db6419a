"""The small interface every channel implements, and the outbox they share."""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered notification for one recipient."""

    notification_id: str
    event_id: str
    event_type: str
    recipient: str
    text: str
    subject: str | None = None
    html: str | None = None
    # The event's data, for channels that send structured payloads (Slack
    # fields, webhook bodies); templates already rendered the text.
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider told us about an accepted message."""

    provider_message_id: str
    details: dict[str, str] = field(default_factory=dict)
    segments: int | None = None  # SMS segments billed, for cost visibility


class Channel(ABC):
    """One way of reaching people.

    Subclasses declare their ``name`` and the template ``parts`` they need,
    then implement :meth:`send`. Shared clients are opened in
    :meth:`start` and closed in :meth:`close`, once per worker process.
    """

    name: ClassVar[str]
    # How many sends of a batch may be in flight at once (email: its SMTP pool).
    concurrency: int = 8
    parts: ClassVar[tuple[str, ...]] = ("body.txt",)

    @classmethod
    def describe(cls, text: str) -> dict[str, str | int]:
        """What a preview should show about ``text`` on this channel (e.g. SMS segments)."""
        return {}

    async def start(self) -> None:
        """Open long-lived clients. Called once per worker process."""

    async def close(self) -> None:
        """Release what :meth:`start` opened."""

    @abstractmethod
    async def send(self, message: Message) -> Receipt:
        """Make exactly one attempt; raise TransientError or PermanentError on failure."""


class Outbox:
    """Writes messages as files under ``<var>/outbox/<channel>/`` when no provider is set up."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def write(self, message: Message, content: bytes, suffix: str) -> Path:
        """Store ``content`` atomically (write then rename) and return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._@+-]", "_", message.recipient)[:80]
        target = self.folder / f"{message.notification_id}-{safe}.{suffix}"
        partial = target.with_suffix(target.suffix + ".part")
        await asyncio.to_thread(partial.write_bytes, content)
        await asyncio.to_thread(partial.replace, target)
        return target
