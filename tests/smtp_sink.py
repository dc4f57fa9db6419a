"""A real SMTP server (aiosmtpd) that records what it receives and misbehaves on request.

Recipients choose the server's answer by their local part:
``reject-...@`` gets 550 at RCPT; ``busy<N>-...@`` gets 451 for its first N
tries, then is accepted; ``closing-...@`` gets 421 (server closing) on its first
try; anything else is accepted. Addresses added to ``healed`` are always accepted;
addresses in ``holding`` get no answer at RCPT until they are removed.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_BUSY = re.compile(r"^busy(\d+)-")


@dataclass
class Received:
    recipient: str
    message: EmailMessage
    arrived_at: float


# How long the sink takes to accept a "slow-..." recipient.
SLOW_REPLY_S = 1.5


@dataclass
class SmtpSink:
    """Handler and record of one aiosmtpd server."""

    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    tries: Counter[str] = field(default_factory=Counter)
    healed: set[str] = field(default_factory=set)
    holding: set[str] = field(default_factory=set)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self._changed:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._changed:
            self.tries[address] += 1
            tries = self.tries[address]
            self._changed.notify_all()
        while address in self.holding:
            await asyncio.sleep(0.01)  # polled: the test releases it from another thread
        if address.startswith("slow-"):
            await asyncio.sleep(SLOW_REPLY_S)  # a provider that takes its time, not a fault
        if address in self.healed:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        if address.startswith("reject-"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("closing-") and tries == 1:
            return "421 4.3.2 service shutting down"
        if (busy := _BUSY.match(address)) and tries <= int(busy.group(1)):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        with self._changed:
            for recipient in envelope.rcpt_tos:
                self.messages.append(Received(recipient, message, time.time()))  # type: ignore[arg-type]
            self._changed.notify_all()
        return "250 Message accepted"

    def to(self, recipient: str) -> list[EmailMessage]:
        with self._changed:
            return [r.message for r in self.messages if r.recipient == recipient]

    def wait_for(self, predicate: Callable[[SmtpSink], bool], timeout_s: float = 20.0) -> None:
        """Block until ``predicate(self)`` holds after a message arrives, or fail."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout_s):
                raise AssertionError(f"SMTP sink: condition not met within {timeout_s}s")


def start_sink(port: int = 0) -> tuple[Controller, SmtpSink]:
    """Start a sink on 127.0.0.1 (a free port unless given); returns (controller, sink)."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port or _free_port())
    controller.start()
    return controller, sink


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
