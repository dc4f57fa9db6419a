"""The small interface every channel implements, and the outbox they share.

A channel module declares everything about its channel on its class: name,
queue, template parts, settings model, default concurrency and rate, whether
it is configured, and (for providers that report back) how to read a status
callback. The base owns outbox mode and the client lifecycle, so a channel is
mostly declaration plus :meth:`Channel._send`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from hub.errors import ChannelError, OutcomeUnknown, TransientError
from hub.settings import ChannelSettings

log = logging.getLogger(__name__)


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
    # A signed link that turns this message's category off for its recipient,
    # when it has both; email writes it as List-Unsubscribe (RFC 8058).
    unsubscribe_url: str | None = None
    # A failure alert's group (count, first and last seen, messages, ack link),
    # for channels that send structured payloads.
    alert: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider told us about an accepted message; stored with the notification."""

    provider_message_id: str
    details: dict[str, str] = field(default_factory=dict)
    segments: int | None = None  # SMS segments billed, for cost visibility


@dataclass(frozen=True, slots=True)
class Callback:
    """A provider's HTTP request to the hub, as received: what a signature covers."""

    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A provider's final word on a message it accepted earlier."""

    provider_message_id: str
    status: Literal["delivered", "undelivered"]
    error: str | None = None
    # The recipient asked not to be contacted on this channel again.
    opt_out: bool = False


SettingsT = TypeVar("SettingsT", bound=ChannelSettings)


class Channel(ABC, Generic[SettingsT]):
    """One way of reaching people, through one provider.

    Subclasses declare the class attributes below and implement
    :meth:`_send` (one attempt; raise TransientError, PermanentError or
    OutcomeUnknown) and :meth:`outbox_entry` (what to write instead when the
    channel is not configured). Long-lived clients are opened in
    :meth:`_start` and released in :meth:`_close`, once per worker process.
    """

    name: ClassVar[str]
    # The Celery queue its deliveries run on; channels of one family share one.
    queue: ClassVar[str]
    settings_model: ClassVar[type[ChannelSettings]]
    # The template variant it renders (hub.templates): email, sms or alert.
    variant: ClassVar[str] = "alert"
    # Part of the "alert" pseudo-channel of subscriptions.
    alert: ClassVar[bool] = False
    outbox_suffix: ClassVar[str] = "txt"
    # Whether its providers report outcomes to /v1/callbacks/{name}/{provider}
    # (see status_report).
    callbacks: ClassVar[bool] = False
    # How many sends of a batch may be in flight at once. (A default rate
    # limit is the ``rate_limit`` default of the channel's settings model.)
    concurrency: int = 8
    # Whether targets on private, loopback or link-local addresses may be
    # reached; the runtime sets it from outbound.allow_private_targets.
    allow_private_targets: bool = True

    def __init__(self, settings: SettingsT, outbox_dir: Path) -> None:
        self.settings = settings
        self.outbox = Outbox(outbox_dir)
        self._started = False

    @classmethod
    @abstractmethod
    def is_configured(cls, settings: Any) -> bool:
        """Whether ``settings`` name a real provider; otherwise messages go to the outbox."""

    @property
    def configured(self) -> bool:
        return self.is_configured(self.settings)

    @classmethod
    def address(cls, settings: Any, recipient: str) -> str:
        """``recipient`` as this channel sends to it; PermanentError saying why it is none.

        Delivery asks before anything is sent, so a bad address fails its
        notification as ``invalid_address`` without reaching a provider.
        Channels whose recipients are labels (Slack, webhooks) take any.
        """
        return recipient

    @classmethod
    def describe(cls, text: str) -> dict[str, str | int]:
        """What a preview should show about ``text`` on this channel (e.g. SMS segments)."""
        return {}

    @classmethod
    def status_report(cls, settings: Any, callback: Callback) -> StatusReport | None:
        """Read a provider's status callback; None for progress that is no outcome.

        Raises :class:`~hub.errors.InvalidSignature` when the request is not
        authentic. Channels that set ``callbacks`` override it.
        """
        raise NotImplementedError(f"the {cls.name} channel takes no provider callbacks")

    async def start(self) -> None:
        """Open long-lived clients; nothing to do in outbox mode or when already open."""
        if self.configured and not self._started:
            await self._start()
            self._started = True

    async def close(self) -> None:
        """Release what :meth:`start` opened."""
        if self._started:
            self._started = False
            await self._close()

    async def send(self, message: Message) -> Receipt:
        """Make exactly one attempt, or write the message to the outbox when not configured."""
        if not self.configured:
            content, receipt = self.outbox_entry(message)
            path = await self.outbox.write(message, content, self.outbox_suffix)
            return replace(receipt, details={**receipt.details, "outbox": str(path)})
        await self.start()
        return await self._send(message)

    async def send_many(
        self,
        messages: Sequence[Message],
        timeout_s: float,
        arrived: Callable[[int, Receipt | ChannelError], None] | None = None,
    ) -> list[Receipt | ChannelError]:
        """One attempt per message, ``concurrency`` at a time, each cut after ``timeout_s``.

        Every message ends in a receipt or a classified error, never in an
        exception: a cut attempt is :class:`OutcomeUnknown` (the request may
        have reached the provider), an unclassified failure is transient.
        ``arrived(index, result)`` is called as each attempt ends.
        """
        slots = asyncio.Semaphore(self.concurrency)

        async def attempt(index: int, message: Message) -> Receipt | ChannelError:
            result = await one(message)
            if arrived is not None:
                arrived(index, result)
            return result

        async def one(message: Message) -> Receipt | ChannelError:
            try:
                # The timeout runs from the send, not from the wait for a free slot.
                async with slots:
                    return await asyncio.wait_for(self.send(message), timeout_s)
            except ChannelError as exc:
                return exc
            except TimeoutError:
                return OutcomeUnknown("attempt timed out", channel=self.name)
            except Exception as exc:
                # A bug or an unclassified library error: keep the notification
                # alive and visible rather than leaving it stuck in "sending".
                log.exception("unexpected error sending %s", message.notification_id)
                return TransientError(f"{type(exc).__name__}: {exc}", channel=self.name)

        return list(await asyncio.gather(*(attempt(i, m) for i, m in enumerate(messages))))

    @abstractmethod
    def outbox_entry(self, message: Message) -> tuple[bytes, Receipt]:
        """The file content standing for ``message`` in the outbox, and its receipt."""

    @abstractmethod
    async def _send(self, message: Message) -> Receipt:
        """One attempt at the provider; failures raised as classified hub errors."""

    async def _start(self) -> None:
        """Open long-lived clients (configured channels only)."""

    async def _close(self) -> None:
        """Release what :meth:`_start` opened."""


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
