"""Phase A's sender: raw aiosmtplib over persistent connections, no Celery, no store.

Each sender process builds its share of welcome emails first (rendered by the
hub's own templates and :func:`~hub.channels.email.build_email`, so they are the
hub's size), opens ``connections`` SMTP sessions, says it is ready, and on ``go``
sends its messages over all of them at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import aiosmtplib

from hub.channels.base import Message
from hub.channels.email import EmailSettings, build_email
from hub.settings import bundled_path
from hub.templates import TemplateSet, from_files

FROM_ADDRESS = EmailSettings().from_address
SENDER = "hub@localhost"


def welcome_message(templates: TemplateSet, n: int, to: str) -> bytes:
    """The hub's welcome email to ``to``, as SMTP bytes."""
    event_id = f"evt_{n:028x}"
    data = {"user_id": str(n), "email": to, "name": f"User {n}"}
    context = {"event": {"id": event_id, "type": "user.registered"}, "data": data}
    context["recipient"] = to
    rendered = templates.render("user.registered", "email", context)
    message = Message(
        notification_id=f"ntf_{n:032x}",
        event_id=event_id,
        event_type="user.registered",
        recipient=to,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        data=data,
    )
    return build_email(message, FROM_ADDRESS).data


def sender(
    port: int, connections: int, first: int, count: int, ready: Queue[int], go: Event
) -> None:
    """Build messages ``first .. first+count-1``, connect, report ready, wait for go, send."""
    templates = from_files([bundled_path("templates")])
    pending = deque(
        (to, welcome_message(templates, n, to))
        for n in range(first, first + count)
        for to in [f"a-{n}@bench.example"]
    )
    asyncio.run(_send_all(port, connections, pending, ready, go))


async def _send_all(
    port: int,
    connections: int,
    pending: deque[tuple[str, bytes]],
    ready: Queue[int],
    go: Event,
) -> None:
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port) for _ in range(connections)]
    for client in clients:
        await client.connect()
    ready.put(len(pending[0][1]) if pending else 0)
    go.wait()  # nothing else runs on this loop yet: blocking here is fine

    async def drain(client: aiosmtplib.SMTP) -> None:
        while pending:
            to, data = pending.popleft()
            await client.sendmail(SENDER, [to], data)

    await asyncio.gather(*(drain(client) for client in clients))
    for client in clients:
        await client.quit()
