"""What a middleware sees of a batch, and the hooks it may implement.

Modelled on dramatiq's middleware: every hook is a documented no-op, the
delivery core calls them in order around one batch, and a policy is one
class in one module. A hook changes a turn's fate through
:meth:`Turn.decide`; the core sends only the turns nobody decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from hub.channels.base import Message, Receipt
from hub.errors import ChannelError, TemplateError
from hub.settings import Settings
from hub.store.events import CompletedEvent, EventRow
from hub.store.models import NotificationStatus
from hub.store.notifications import Claimed

if TYPE_CHECKING:
    from hub.templates import TemplateSet


@dataclass(slots=True)
class Turn:
    """One notification's turn through the pipeline: what was sent, what came back, its fate."""

    notification: Claimed
    event: EventRow
    # The stored recipient as templates see it (``profile``), when there is one.
    profile: dict[str, Any] | None = None
    # A digest's events, oldest first (those folded into it; see hub.store.digests).
    digest: list[EventRow] | None = None
    # A failure alert's group as templates see it (``alert``; hub.alerts.context).
    alert: dict[str, Any] | None = None
    message: Message | None = None
    # The channel's providers still to try this attempt, in order.
    providers: list[str] = field(default_factory=list)
    result: Receipt | ChannelError | TemplateError | None = None
    # The provider that gave ``result``, and every (provider, result) of this attempt.
    provider: str | None = None
    tried: list[tuple[str, Receipt | ChannelError]] = field(default_factory=list)
    status: NotificationStatus | None = None
    reason: str = ""
    # Set when the notification must run again after this many seconds.
    retry_in_s: float | None = None
    # A rate-limit token is reserved for it: it sends at its slot without asking again.
    holds_token: bool = False
    # Set by the core once the store took the decision (not already final elsewhere).
    recorded: bool = False
    attempt_number: int = 0

    @property
    def decided(self) -> bool:
        return self.status is not None

    def decide(
        self, status: NotificationStatus, reason: str = "", retry_in_s: float | None = None
    ) -> None:
        """Settle this turn's fate; a later hook may still change it."""
        self.status, self.reason, self.retry_in_s = status, reason, retry_in_s


@dataclass(slots=True)
class Batch:
    """A claimed batch of one channel's notifications."""

    channel: str
    settings: Settings
    turns: list[Turn] = field(default_factory=list)
    # Its turns come back at slots they reserved: the rate limit is already paid.
    reserved: bool = False
    # Providers whose one half-open probe this batch holds (CircuitBreaker).
    probes: set[str] = field(default_factory=set)
    # Events its recording completed (Completion); None until the check ran.
    completed: list[CompletedEvent] | None = None
    # The templates as of its claim: what every turn of it renders with.
    templates: TemplateSet | None = None

    def undecided(self) -> list[Turn]:
        return [turn for turn in self.turns if not turn.decided]


class Middleware:
    """Hooks around the delivery of a batch, each a no-op unless overridden.

    In order: :meth:`after_claim` (inside the claim's transaction),
    :meth:`before_send`, :meth:`after_send` (results are in and classified),
    :meth:`on_record` (inside the transaction that records the outcomes) and
    :meth:`after_record` (once they are committed).
    """

    def after_claim(self, db: Session, batch: Batch) -> None:
        """Load what later hooks need, in the claim's transaction."""

    def before_send(self, batch: Batch) -> None:
        """Decide turns that must not be sent now (suppressed, waiting, given up)."""

    def after_send(self, batch: Batch) -> None:
        """Revise the core's classification (retry a transient failure, ...)."""

    def on_record(self, db: Session, batch: Batch) -> None:
        """Write what the policy keeps, in the same transaction as the outcomes."""

    def after_record(self, batch: Batch) -> None:
        """Act on committed outcomes (announce a failure, ...); never raise."""
