"""Completion: the batch that records an event's last notification completes the event.

Only for event types with ``completion = true`` (:mod:`hub.completion`); a
batch of other events costs nothing. The check runs in the transaction that
records the outcomes, so the event is completed with them or not at all, and
``event.completed`` is published once that transaction is committed.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from hub.completion import Publish, announce, complete, completion_on
from hub.middleware.base import Batch, Middleware
from hub.store.db import session
from hub.store.events import UNFINISHED, EventRow

log = logging.getLogger(__name__)


class Completion(Middleware):
    """Complete the events whose last open notification this batch recorded; announce them."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def on_record(self, db: Session, batch: Batch) -> None:
        batch.completed = complete(db, batch.settings, _candidates(batch))

    def after_record(self, batch: Batch) -> None:
        if batch.completed is None:
            # Every send was stored as it came in (hub.recording), so no
            # recording transaction ran the check: it runs on its own.
            candidates = _candidates(batch)
            if not candidates:
                return
            try:
                with session(batch.settings.resolved_database_url) as db:
                    batch.completed = complete(db, batch.settings, candidates)
            except Exception:
                # The outcomes are committed; a check that fails here is made
                # again by the next outcome recorded for the event, if any.
                log.exception("completion check failed for %d event(s)", len(candidates))
                return
        announce(self._publish, batch.completed)


def _candidates(batch: Batch) -> list[EventRow]:
    """The events of turns this batch made final, of types with completion on.

    By the turn's decision, not ``recorded``: sends stored in the recording
    transaction are not marked. A turn the store did not take (the sweeper
    gave it away) only adds an event to check, which is harmless.
    """
    return [
        turn.event
        for turn in batch.turns
        if turn.status is not None
        and turn.status not in UNFINISHED
        and completion_on(batch.settings, turn.event.type)
    ]
