"""Stored opt-outs: recipients who asked not to be contacted on a channel again."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import OptOut


def opted_out(db: Session, channel: str, recipients: Iterable[str]) -> set[str]:
    """Which of ``recipients`` opted out of ``channel``."""
    query = select(OptOut.recipient).where(
        OptOut.channel == channel, OptOut.recipient.in_(list(recipients))
    )
    return set(db.scalars(query))


def add_opt_out(db: Session, channel: str, recipient: str, reason: str) -> None:
    """Remember that ``recipient`` asked not to be contacted on ``channel`` (idempotent)."""
    if db.get(OptOut, (channel, recipient)) is None:
        db.add(OptOut(channel=channel, recipient=recipient, reason=reason))
