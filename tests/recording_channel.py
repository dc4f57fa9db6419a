"""A channel added from outside the hub, in one file: it appends each message to a JSON-lines file.

Registered through the ``extra_channels`` setting; tests use it to prove that
a channel needs nothing but its own module and one registry line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

from hub.channels.base import Channel, Message, Receipt
from hub.errors import PermanentError
from hub.settings import ChannelSettings


class RecordingSettings(ChannelSettings):
    """Where the messages go; empty: the outbox."""

    path: str = ""


class RecordingChannel(Channel[RecordingSettings]):
    """Appends one JSON line per message to ``channels.recorder.path``."""

    name: ClassVar[str] = "recorder"
    queue: ClassVar[str] = "recorder"
    settings_model: ClassVar[type[ChannelSettings]] = RecordingSettings
    outbox_suffix: ClassVar[str] = "json"

    @classmethod
    def is_configured(cls, settings: Any) -> bool:
        return bool(settings.path)

    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        return _line(message), Receipt(f"rec-{message.notification_id}")

    async def _send(self, message: Message) -> Receipt:
        if message.recipient.startswith("nobody@"):
            raise PermanentError("no such mailbox", channel=self.name, provider_code=550)
        path = Path(self.settings.path)
        await asyncio.to_thread(_append, path, _line(message))
        return Receipt(f"rec-{message.notification_id}", {"path": str(path)})


def _line(message: Message) -> bytes:
    record = {"id": message.notification_id, "to": message.recipient, "text": message.text}
    return json.dumps(record).encode() + b"\n"


def _append(path: Path, line: bytes) -> None:
    with path.open("ab") as out:
        out.write(line)
