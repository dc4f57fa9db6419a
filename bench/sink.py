"""One aiosmtpd SMTP sink in its own process, recording (recipient, arrival time, Message-ID).

The sink runs in a child process so its CPU never competes with the measuring
process's GIL. The bench reads a shared counter to wait for arrivals and asks
the child over a pipe for the records (``dump``) or to forget them (``reset``).
Arrival times are wall clock ``time.time()``, comparable with the publisher's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Arrival:
    recipient: str
    arrived_at: float
    message_id: str


class _Recorder:
    """The aiosmtpd handler: accepts everything, notes who got what and when."""

    def __init__(self, count: Synchronized[int]) -> None:
        self.count = count
        self.records: list[tuple[str, float, str]] = []
        self.connections = 0

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived_at = time.time()
        content = envelope.original_content or b""
        headers = content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(headers)
        message_id = found.group(1).decode() if found else ""
        for recipient in envelope.rcpt_tos:
            self.records.append((recipient, arrived_at, message_id))
        self.count.value = len(self.records)
        return "250 Message accepted"


def _serve(port: int, count: Synchronized[int], control: Connection) -> None:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    recorder = _Recorder(count)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(recorder, hostname="bench-sink", loop=loop),
            host="127.0.0.1",
            port=port,
            backlog=1024,
        )
    )

    def reply(answer: object) -> None:
        # The loop made the pipe non-blocking; a dump is larger than its buffer.
        os.set_blocking(control.fileno(), True)
        try:
            control.send(answer)
        finally:
            os.set_blocking(control.fileno(), False)

    def on_command() -> None:
        try:
            command = control.recv()
        except EOFError:
            loop.stop()
            return
        if command == "dump":
            reply((recorder.records, recorder.connections))
        elif command == "reset":
            recorder.records = []
            recorder.connections = 0
            count.value = 0
            reply("ok")
        elif command == "stop":
            reply("ok")
            loop.stop()

    loop.add_reader(control.fileno(), on_command)
    control.send("ready")
    loop.run_forever()
    server.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SinkProcess:
    """Start with :meth:`start`; ``port`` is where it listens."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.port = _free_port()
        self._count: Synchronized[int] = context.Value("q", 0, lock=False)  # type: ignore[assignment]
        self._control, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(self.port, self._count, child), name="bench-sink", daemon=True
        )

    def start(self, timeout_s: float = 30.0) -> SinkProcess:
        self._process.start()
        if not self._control.poll(timeout_s) or self._control.recv() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def count(self) -> int:
        """Messages received since the last reset (one per recipient)."""
        return int(self._count.value)

    def wait_for(
        self, n: int, timeout_s: float, stalled: Callable[[], str | None] | None = None
    ) -> bool:
        """Block until ``n`` messages arrived; False on timeout or when ``stalled()`` says why."""
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            if time.monotonic() > deadline or (stalled is not None and stalled()):
                return False
            time.sleep(0.005)
        return True

    def dump(self) -> tuple[list[Arrival], int]:
        """Every arrival since the last reset, and how many SMTP sessions were opened."""
        self._control.send("dump")
        records, connections = self._control.recv()
        return [Arrival(*r) for r in records], connections

    def reset(self) -> None:
        self._control.send("reset")
        self._control.recv()

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._control.send("stop")
                self._control.poll(5) and self._control.recv()
            except (BrokenPipeError, EOFError):
                pass
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
