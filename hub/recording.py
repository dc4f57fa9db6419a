"""Writing a batch's outcomes: sends as they complete, in groups; the rest in one transaction.

A send the provider accepted is stored while the batch's other sends are
still in flight, so a worker that dies mid-batch leaves at most the sends of
its last :data:`STORE_WITHIN_S` unrecorded, for the sweeper to send again.
The sends completing within that time share one transaction: one for each
send cost the worker more than the send itself (a thread hand-off and a
commit for every one or two emails, half its CPU in a fan-out). Meanwhile
the batch's leases are renewed, so the sweeper never takes over work a live
worker still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from hub import logs, metrics
from hub.channels.base import Receipt
from hub.middleware import Batch, Turn
from hub.store import backlog
from hub.store import notifications as stored_notifications
from hub.store.db import session
from hub.store.models import NotificationStatus

if TYPE_CHECKING:
    from hub.middleware import Middleware

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a send the provider accepted may wait to share its transaction with
# the sends completing after it.
STORE_WITHIN_S = 0.05


def sent_receipt(turn: Turn) -> stored_notifications.SentReceipt:
    receipt = turn.result
    assert isinstance(receipt, Receipt)
    details = receipt.details or None
    pmid, segments = receipt.provider_message_id, receipt.segments
    return (turn.notification.id, pmid, segments, details, turn.provider)


class SendRecorder:
    """Stores sends as they complete, in groups, and renews the batch's leases meanwhile."""

    def __init__(self, database_url: str, batch: Batch, lease_s: float) -> None:
        self._url = database_url
        self._ids = [turn.notification.id for turn in batch.turns]
        self._renew_every_s = lease_s / 3
        self._pending: list[Turn] = []
        self._arrived = asyncio.Event()

    def sent(self, turn: Turn) -> None:
        """Note a send the provider accepted; it is stored at the next flush."""
        self._pending.append(turn)
        self._arrived.set()

    async def run(self, sending: Awaitable[T]) -> T:
        """Await ``sending``, storing its accepted sends and renewing leases until it ends.

        Sends still unstored when it ends are left to :func:`record`, so a
        batch that finishes within :data:`STORE_WITHIN_S` costs one transaction.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(sending)
        renew_at = loop.time() + self._renew_every_s
        while True:
            arrived = asyncio.ensure_future(self._arrived.wait())
            await asyncio.wait(
                {task, arrived},
                timeout=max(renew_at - loop.time(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            arrived.cancel()
            if self._pending and not task.done():
                await asyncio.wait({task}, timeout=STORE_WITHIN_S)
            if task.done():
                return task.result()
            await self._flush()
            if loop.time() >= renew_at:
                await asyncio.to_thread(self._renew)
                renew_at = loop.time() + self._renew_every_s

    async def _flush(self) -> None:
        self._arrived.clear()
        turns, self._pending = self._pending, []
        if turns:
            await asyncio.to_thread(self._store, turns)

    def _store(self, turns: list[Turn]) -> None:
        with session(self._url) as db:
            stored_notifications.finish_sent(db, [sent_receipt(turn) for turn in turns])
        for turn in turns:
            turn.recorded = True

    def _renew(self) -> None:
        with session(self._url) as db:
            backlog.renew_leases(db, self._ids)


def record(database_url: str, batch: Batch, middleware: list[Middleware]) -> None:
    """Store every outcome not stored yet in one transaction; a wait undoes its claim."""
    _count(batch)
    if all(turn.recorded for turn in batch.turns):
        return  # every turn was sent and stored as it completed: nothing left to write
    receipts: list[stored_notifications.SentReceipt] = []
    waiting: dict[str, str] = {}
    with session(database_url) as db:
        for turn in batch.turns:
            nid, status = turn.notification.id, turn.status
            if status is NotificationStatus.SENT:
                if not turn.recorded:
                    receipts.append(sent_receipt(turn))
            elif status is NotificationStatus.WAITING:
                waiting[nid] = turn.reason
            elif status is not None:
                log.warning(
                    "notification %s %s: %s",
                    nid,
                    status,
                    turn.reason,
                    extra=logs.ids(turn.event.id, nid),
                )
                number = stored_notifications.finish(db, nid, status, turn.reason, turn.provider)
                turn.recorded, turn.attempt_number = number is not None, number or 0
        if receipts:
            stored_notifications.finish_sent(db, receipts)
        if waiting:
            stored_notifications.release(db, waiting)
        for hook in middleware:
            hook.on_record(db, batch)


def _count(batch: Batch) -> None:
    """hub_notifications_total: each turn by the state this attempt left it in."""
    counts: dict[str, int] = {}
    for turn in batch.turns:
        if turn.status is not None:
            counts[turn.status.value] = counts.get(turn.status.value, 0) + 1
    metrics.notifications(batch.channel, counts)
