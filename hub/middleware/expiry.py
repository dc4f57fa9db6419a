"""Expiry: a notification past its subscription's ttl is expired, never sent late.

A verification code that arrives ten minutes late does harm; whatever held
it back (an outage, an open circuit, a rate limit), it is not sent once its
time has passed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from hub.middleware.base import Batch, Middleware
from hub.store.models import NotificationStatus, utcnow


class Expiry(Middleware):
    """Expire claimed notifications whose ttl has passed."""

    def after_claim(self, db: Session, batch: Batch) -> None:
        now = utcnow()
        for turn in batch.undecided():
            expires_at = turn.notification.expires_at
            if expires_at is not None and expires_at <= now:
                late_s = (now - expires_at).total_seconds()
                reason = f"expired: its subscription's ttl passed {late_s:.0f}s before it could go"
                turn.decide(NotificationStatus.EXPIRED, reason)
