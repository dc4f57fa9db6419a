"""Opt-outs: never send to a recipient who asked not to be contacted on a channel.

A provider can tell us (an SMS STOP surfaces as a permanent error with
``opt_out``); the opt-out is stored with the outcome and every later message
to that recipient on that channel is suppressed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from hub.errors import PermanentError
from hub.middleware.base import Batch, Middleware
from hub.store import opt_outs
from hub.store.models import NotificationStatus


class OptOut(Middleware):
    """Suppress messages to opted-out recipients; record new opt-outs from providers."""

    def after_claim(self, db: Session, batch: Batch) -> None:
        recipients = {turn.notification.recipient for turn in batch.turns}
        opted_out = opt_outs.opted_out(db, batch.channel, recipients)
        for turn in batch.turns:
            if turn.notification.recipient in opted_out:
                reason = f"{turn.notification.recipient} opted out of {batch.channel}"
                turn.decide(NotificationStatus.SUPPRESSED, reason)

    def on_record(self, db: Session, batch: Batch) -> None:
        for turn in batch.turns:
            if isinstance(turn.result, PermanentError) and turn.result.opt_out:
                recipient = turn.notification.recipient
                opt_outs.add_opt_out(db, batch.channel, recipient, str(turn.result))
