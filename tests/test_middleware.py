"""Spec: each delivery middleware, hook by hook, on a batch of turns built by hand.

No worker, broker or channel runs here: a test builds the turns the core
would hand a hook (claimed notification, its event, the rendered message,
the channel's result and the core's classification), calls the hook, and
reads the fate it decided. Opt-outs use a real, migrated SQLite store; the
rate limit uses the in-process limiter on a clock that moves only when told.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from hub.channels.base import Message, Receipt
from hub.circuit import StubCircuitBreakers
from hub.errors import (
    BrokerUnavailable,
    ChannelError,
    EventError,
    OutcomeUnknown,
    PermanentError,
    TemplateError,
    TransientError,
)
from hub.middleware import (
    Announcer,
    Batch,
    CircuitBreaker,
    Completion,
    Expiry,
    OptOut,
    PoisonGuard,
    RateLimit,
    Retries,
    StatusWebhooks,
    Turn,
    default_middleware,
)
from hub.middleware.retries import backoff_s
from hub.ratelimit import StubRateLimiter
from hub.settings import Rate, Settings, bundled_path, load_settings
from hub.store import opt_outs
from hub.store.db import migrate, session
from hub.store.models import NotificationStatus, utcnow
from hub.store.notifications import Claimed

# ---- Building turns and settings ---------------------------------------------------------------


class FakeEvent(NamedTuple):
    """What the hooks read of an ``EventRow``: id, type and data."""

    id: str
    type: str
    data: dict[str, Any]


Result = Receipt | ChannelError | TemplateError | None


def make_turn(
    n: int = 1,
    *,
    channel: str = "sms",
    recipient: str | None = None,
    attempts: int = 1,
    event_type: str = "user.registered",
    rendered: bool = True,
    result: Result = None,
    status: NotificationStatus | None = None,
    reason: str = "",
    queued_s_ago: float = 0.0,
    expires_in_s: float | None = None,
) -> Turn:
    """Turn number ``n`` of a batch, as the core hands it to a hook at that point."""
    recipient = recipient or f"+1555000{n:04d}"
    notification = Claimed(
        id=f"ntf_{n}",
        event_id=f"evt_{n}",
        channel=channel,
        recipient=recipient,
        template=event_type,
        attempts=attempts,
        created_at=utcnow() - timedelta(seconds=queued_s_ago),
        expires_at=None if expires_in_s is None else utcnow() + timedelta(seconds=expires_in_s),
    )
    event = FakeEvent(f"evt_{n}", event_type, {"user_id": str(n)})
    message = None
    if rendered:
        message = Message(
            notification_id=notification.id,
            event_id=event.id,
            event_type=event.type,
            recipient=recipient,
            text=f"hello {n}",
        )
    turn = Turn(notification, event, message=message, result=result)  # type: ignore[arg-type]
    if status is not None:
        turn.decide(status, reason)
    return turn


def transient(retry_after_s: float | None = None) -> TransientError:
    return TransientError(
        "provider down", channel="sms", provider_code=503, retry_after_s=retry_after_s
    )


def permanent(opt_out: bool = False) -> PermanentError:
    return PermanentError(
        "recipient unsubscribed", channel="sms", provider_code=21610, opt_out=opt_out
    )


def unknown() -> OutcomeUnknown:
    return OutcomeUnknown("timed out after the request went out", channel="sms")


# The values these tests rely on, set explicitly: another test module may have
# left HUB_ env vars of its own in this process.
BASELINE = {
    "HUB_DELIVERY__MAX_ATTEMPTS": "5",
    "HUB_DELIVERY__BACKOFF_BASE_S": "2",
    "HUB_DELIVERY__BACKOFF_MAX_S": "300",
}


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings from the bundled file, the baseline and the given ``HUB_...`` env vars."""

    def configure(**env: str) -> Settings:
        for name, value in {**BASELINE, **{f"HUB_{k.upper()}": v for k, v in env.items()}}.items():
            monkeypatch.setenv(name, value)
        return load_settings()

    return configure


@pytest.fixture
def settings(configure: Callable[..., Settings]) -> Settings:
    """Settings at the baseline: 5 attempts, backoff 2 s doubling up to 300 s, no rate limits."""
    return configure()


def batch_of(settings: Settings, *turns: Turn, channel: str = "sms") -> Batch:
    return Batch(channel, settings, list(turns))


def fates(batch: Batch) -> list[NotificationStatus | None]:
    return [turn.status for turn in batch.turns]


# ---- OptOut ------------------------------------------------------------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    return url


def test_opt_out_suppresses_turns_to_a_recipient_opted_out_of_the_channel(
    settings: Settings, database_url: str
) -> None:
    # Given +15550001 opted out of SMS
    with session(database_url) as db:
        opt_outs.add_opt_out(db, "sms", "+15550001", "STOP")
    batch = batch_of(
        settings,
        make_turn(1, recipient="+15550001"),
        make_turn(2, recipient="+15550002"),
        make_turn(3, recipient="+15550001"),
    )

    # When the batch is claimed
    with session(database_url) as db:
        OptOut().after_claim(db, batch)

    # Then both turns to them are suppressed, naming who and where; the other is left to send
    assert fates(batch) == [NotificationStatus.SUPPRESSED, None, NotificationStatus.SUPPRESSED]
    assert batch.turns[0].reason == "+15550001 opted out of sms"
    assert batch.turns[0].retry_in_s is None


def test_opt_out_of_another_channel_does_not_suppress(
    settings: Settings, database_url: str
) -> None:
    # Given a recipient opted out of email only
    with session(database_url) as db:
        opt_outs.add_opt_out(db, "email", "+15550001", "unsubscribed")
    batch = batch_of(settings, make_turn(1, recipient="+15550001"))

    # When an SMS batch to them is claimed
    with session(database_url) as db:
        OptOut().after_claim(db, batch)

    # Then it is sent as usual
    assert fates(batch) == [None]


def test_opt_out_is_stored_when_the_provider_reports_one(
    settings: Settings, database_url: str
) -> None:
    # Given the provider answered a send with a permanent error that is an opt-out (SMS STOP)
    error = permanent(opt_out=True)
    turn = make_turn(1, recipient="+15550001", result=error, status=NotificationStatus.FAILED)

    # When the outcomes are recorded
    with session(database_url) as db:
        OptOut().on_record(db, batch_of(settings, turn))

    # Then the recipient is opted out of that channel, for every later batch
    with session(database_url) as db:
        assert opt_outs.opted_out(db, "sms", ["+15550001"]) == {"+15550001"}
        assert opt_outs.opted_out(db, "email", ["+15550001"]) == set()


@pytest.mark.parametrize(
    "result",
    [permanent(opt_out=False), transient(), unknown(), Receipt("SM1"), None],
    ids=["permanent", "transient", "unknown", "sent", "not-sent"],
)
def test_opt_out_is_not_stored_for_any_other_result(
    settings: Settings, database_url: str, result: Result
) -> None:
    # Given a result that is not an opt-out
    turn = make_turn(1, recipient="+15550001", result=result)

    # When the outcomes are recorded
    with session(database_url) as db:
        OptOut().on_record(db, batch_of(settings, turn))

    # Then nobody is opted out
    with session(database_url) as db:
        assert opt_outs.opted_out(db, "sms", ["+15550001"]) == set()


def test_two_opt_outs_of_one_recipient_in_one_batch_are_stored_once(
    settings: Settings, database_url: str
) -> None:
    # Given two notifications to the same number both came back as STOP
    batch = batch_of(
        settings,
        make_turn(1, recipient="+15550001", result=permanent(opt_out=True)),
        make_turn(2, recipient="+15550001", result=permanent(opt_out=True)),
    )

    # When the outcomes are recorded (and committed)
    with session(database_url) as db:
        OptOut().on_record(db, batch)

    # Then the transaction commits and the recipient is opted out
    with session(database_url) as db:
        assert opt_outs.opted_out(db, "sms", ["+15550001"]) == {"+15550001"}


def test_an_opt_out_already_stored_is_kept_when_reported_again(
    settings: Settings, database_url: str
) -> None:
    # Given a recipient already opted out
    with session(database_url) as db:
        opt_outs.add_opt_out(db, "sms", "+15550001", "STOP")
    turn = make_turn(1, recipient="+15550001", result=permanent(opt_out=True))

    # When the provider reports the opt-out again
    with session(database_url) as db:
        OptOut().on_record(db, batch_of(settings, turn))

    # Then recording succeeds and they stay opted out
    with session(database_url) as db:
        assert opt_outs.opted_out(db, "sms", ["+15550001"]) == {"+15550001"}


# ---- PoisonGuard -------------------------------------------------------------------------------


def test_poison_guard_fails_a_turn_claimed_more_often_than_the_budget(settings: Settings) -> None:
    # Given a notification claimed a 6th time with a budget of 5 attempts
    batch = batch_of(settings, make_turn(1, attempts=6))

    # When the batch is about to be sent
    PoisonGuard().before_send(batch)

    # Then it is failed instead, naming the attempts that never finished
    assert fates(batch) == [NotificationStatus.FAILED]
    assert batch.turns[0].reason == "gave up: 5 attempts never finished"
    assert batch.turns[0].retry_in_s is None


@pytest.mark.parametrize("attempts", [1, 5])
def test_poison_guard_leaves_a_turn_within_the_budget_undecided(
    settings: Settings, attempts: int
) -> None:
    # Given a notification on its first or last allowed attempt
    batch = batch_of(settings, make_turn(1, attempts=attempts))

    # When the batch is about to be sent
    PoisonGuard().before_send(batch)

    # Then it is left to be sent
    assert fates(batch) == [None]


def test_poison_guard_uses_the_channels_own_budget(configure: Callable[..., Settings]) -> None:
    # Given SMS allows 2 attempts although delivery allows 5
    settings = configure(channels__sms__max_attempts="2")
    batch = batch_of(settings, make_turn(1, attempts=2), make_turn(2, attempts=3))

    # When the batch is about to be sent
    PoisonGuard().before_send(batch)

    # Then the 3rd claim is given up on and the 2nd is not
    assert fates(batch) == [None, NotificationStatus.FAILED]
    assert batch.turns[1].reason == "gave up: 2 attempts never finished"


def test_poison_guard_leaves_a_turn_another_policy_decided(settings: Settings) -> None:
    # Given an over-budget turn already suppressed by an opt-out
    turn = make_turn(1, attempts=9, status=NotificationStatus.SUPPRESSED, reason="opted out")
    batch = batch_of(settings, turn)

    # When the batch is about to be sent
    PoisonGuard().before_send(batch)

    # Then it stays suppressed
    assert (turn.status, turn.reason) == (NotificationStatus.SUPPRESSED, "opted out")


# ---- RateLimit ---------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """A clock that moves only when told."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limiter() -> StubRateLimiter:
    return StubRateLimiter(clock=FakeClock())


JITTER_S = 0.02


def ready_turns(count: int) -> list[Turn]:
    return [make_turn(n) for n in range(1, count + 1)]


def test_rate_limit_lets_through_as_many_turns_as_it_has_tokens(
    configure: Callable[..., Settings], limiter: StubRateLimiter
) -> None:
    # Given SMS is limited to 2/s with a burst of 2, and 5 rendered turns
    settings = configure(channels__sms__rate_limit="2/s", channels__sms__burst="2")
    batch = batch_of(settings, *ready_turns(5))

    # When the batch is about to be sent
    RateLimit(limiter).before_send(batch)

    # Then the first two go now and the other three wait
    assert fates(batch) == [None, None, *[NotificationStatus.WAITING] * 3]


def test_rate_limited_turns_wait_one_interval_apart(
    configure: Callable[..., Settings], limiter: StubRateLimiter
) -> None:
    # Given SMS is limited to 2/s (one every 0.5 s) with a burst of 2, and 5 rendered turns
    settings = configure(channels__sms__rate_limit="2/s", channels__sms__burst="2")
    batch = batch_of(settings, *ready_turns(5))

    # When the batch is about to be sent
    RateLimit(limiter).before_send(batch)

    # Then the waiting turns come back 0.5 s, 1 s and 1.5 s from now (plus a little jitter)
    waiting = batch.turns[2:]
    assert all(turn.reason.startswith("rate_limited:") for turn in waiting)
    for turn, expected_s in zip(waiting, [0.5, 1.0, 1.5], strict=True):
        assert turn.retry_in_s is not None
        assert expected_s <= turn.retry_in_s <= expected_s + JITTER_S


def test_rate_limit_spends_no_token_on_a_turn_that_will_not_be_sent(
    configure: Callable[..., Settings], limiter: StubRateLimiter
) -> None:
    # Given a 1/s limit (one token), a suppressed turn, one whose template failed, one ready
    settings = configure(channels__sms__rate_limit="1/s")
    suppressed = make_turn(1, status=NotificationStatus.SUPPRESSED)
    unrendered = make_turn(2, rendered=False)
    ready = make_turn(3)
    batch = batch_of(settings, suppressed, unrendered, ready)

    # When the batch is about to be sent
    RateLimit(limiter).before_send(batch)

    # Then the one token goes to the ready turn
    assert fates(batch) == [NotificationStatus.SUPPRESSED, None, None]


def test_a_paused_channel_without_a_rate_limit_holds_every_ready_turn(
    settings: Settings, limiter: StubRateLimiter
) -> None:
    # Given SMS has no rate limit but a provider paused it for 5 s
    limiter.pause("sms", 5)
    batch = batch_of(settings, *ready_turns(3))

    # When the batch is about to be sent
    RateLimit(limiter).before_send(batch)

    # Then every turn waits out the pause
    assert fates(batch) == [NotificationStatus.WAITING] * 3
    for turn in batch.turns:
        assert turn.retry_in_s is not None
        assert 5 <= turn.retry_in_s <= 5 + JITTER_S


def test_without_a_rate_limit_or_a_pause_every_turn_goes(
    settings: Settings, limiter: StubRateLimiter
) -> None:
    # Given SMS has no rate limit and only email is paused
    limiter.pause("email", 5)
    batch = batch_of(settings, *ready_turns(3))

    # When the batch is about to be sent
    RateLimit(limiter).before_send(batch)

    # Then nothing is held
    assert fates(batch) == [None, None, None]


def test_a_providers_retry_after_pauses_the_channel(
    settings: Settings, limiter: StubRateLimiter
) -> None:
    # Given two sends answered "retry after 3 s" and "retry after 7 s"
    batch = batch_of(
        settings,
        make_turn(1, result=transient(retry_after_s=3), status=NotificationStatus.FAILED),
        make_turn(2, result=transient(retry_after_s=7), status=NotificationStatus.FAILED),
        make_turn(3, result=Receipt("SM3"), status=NotificationStatus.SENT),
    )

    # When the results are in
    RateLimit(limiter).after_send(batch)

    # Then the whole channel pauses for the longer of the two, and no other channel does
    assert limiter.paused_for("sms") == 7
    assert limiter.paused_for("email") == 0


def test_failures_without_retry_after_do_not_pause_the_channel(
    settings: Settings, limiter: StubRateLimiter
) -> None:
    # Given sends that failed without asking for a pause
    batch = batch_of(
        settings,
        make_turn(1, result=transient(), status=NotificationStatus.FAILED),
        make_turn(2, result=permanent(), status=NotificationStatus.FAILED),
    )

    # When the results are in
    RateLimit(limiter).after_send(batch)

    # Then the channel is not paused
    assert limiter.paused_for("sms") == 0


def test_without_a_limiter_rate_limit_holds_nothing(configure: Callable[..., Settings]) -> None:
    # Given a 1/s limit but no limiter, and three ready turns
    settings = configure(channels__sms__rate_limit="1/s")
    batch = batch_of(settings, *ready_turns(3))

    # When the batch is about to be sent
    RateLimit(None).before_send(batch)

    # Then every turn goes
    assert fates(batch) == [None, None, None]


def test_without_a_limiter_a_retry_after_is_ignored(settings: Settings) -> None:
    # Given a send answered "retry after 7 s" and no limiter
    turn = make_turn(1, result=transient(retry_after_s=7), status=NotificationStatus.FAILED)

    # When the results are in
    RateLimit(None).after_send(batch_of(settings, turn))

    # Then nothing happens to the turn (and nothing raises)
    assert (turn.status, turn.retry_in_s) == (NotificationStatus.FAILED, None)


def test_turns_coming_back_at_reserved_slots_take_no_token_again(
    configure: Callable[..., Settings], limiter: StubRateLimiter
) -> None:
    settings = configure(channels__sms__rate_limit="1/s")
    limiter.reserve("sms", Rate.parse("1/s"), 1, 5)  # the slots are taken, by them
    batch = Batch("sms", settings, [make_turn(1)], reserved=True)

    RateLimit(limiter).before_send(batch)

    assert fates(batch) == [None]


def test_waiting_turns_hold_the_tokens_of_their_slots(
    configure: Callable[..., Settings], limiter: StubRateLimiter
) -> None:
    settings = configure(channels__sms__rate_limit="1/s")
    batch = batch_of(settings, make_turn(1), make_turn(2), make_turn(3))

    RateLimit(limiter).before_send(batch)

    assert [turn.holds_token for turn in batch.turns] == [False, True, True]


# ---- Retries -----------------------------------------------------------------------------------


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The bundled settings.toml alone: no HUB_ env var (other tests' stacks export theirs)."""
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)
    return load_settings(bundled_path("settings.toml"))


def test_the_shipped_retry_budget_is_a_window_in_time_with_attempts_as_an_upper_bound(
    shipped: Settings,
) -> None:
    assert shipped.delivery.max_attempts == 25
    assert shipped.channels.email.retry_window_s == 24 * 3600
    for channel in ("sms", "slack", "webhook", "apprise"):
        assert shipped.channels.of(channel).retry_window_s == 3600


def test_the_shipped_budget_rides_out_a_ten_minute_outage(shipped: Settings) -> None:
    # Given the shipped settings and a provider down for ten minutes
    random.seed(7)

    # When a notification fails every attempt, the worst of 200 draws of the jitter
    def time_to_give_up() -> float:
        elapsed, attempt = 0.0, 1
        while attempt < shipped.delivery.max_attempts:
            elapsed += backoff_s(attempt, shipped)
            attempt += 1
        return elapsed

    # Then it is still being retried after the ten minutes
    assert min(time_to_give_up() for _ in range(200)) > 600


def test_a_transient_failure_past_the_retry_window_fails_naming_the_window(
    settings: Settings,
) -> None:
    # Given an SMS (retry_window 1h) queued two hours ago, failing on attempt 3 of 5
    turn = make_turn(
        1, attempts=3, result=transient(), status=NotificationStatus.FAILED, queued_s_ago=7200
    )

    Retries().after_send(batch_of(settings, turn))

    assert turn.status is NotificationStatus.FAILED
    assert "retry_window_exhausted" in turn.reason


def test_the_last_retry_inside_the_window_falls_at_its_end(
    configure: Callable[..., Settings],
) -> None:
    # Given backoff that would wait 300 s, and 10 s left of the window
    settings = configure(delivery__backoff_base_s="300")
    turn = make_turn(
        1, attempts=3, result=transient(), status=NotificationStatus.FAILED, queued_s_ago=3590
    )

    Retries().after_send(batch_of(settings, turn))

    assert turn.status is NotificationStatus.RETRYING
    assert turn.retry_in_s is not None and turn.retry_in_s <= 10


def test_a_transient_failure_is_retried_within_the_backoff_ceiling(settings: Settings) -> None:
    # Given 50 third attempts that failed transiently (ceiling: 2 s * 2**2 = 8 s)
    error = transient()
    turns = [
        make_turn(n, attempts=3, result=error, status=NotificationStatus.FAILED, reason=str(error))
        for n in range(50)
    ]
    batch = batch_of(settings, *turns)

    # When the results are in
    Retries().after_send(batch)

    # Then each is retrying after a delay above zero and at most the ceiling
    assert fates(batch) == [NotificationStatus.RETRYING] * 50
    for turn in turns:
        assert turn.retry_in_s is not None
        assert 0 < turn.retry_in_s <= 8
        assert turn.reason == str(error)


def test_a_retry_waits_at_least_the_providers_retry_after(settings: Settings) -> None:
    # Given first attempts (ceiling 2 s) that the provider asked to retry after 30 s
    turns = [
        make_turn(n, result=transient(retry_after_s=30), status=NotificationStatus.FAILED)
        for n in range(20)
    ]

    # When the results are in
    Retries().after_send(batch_of(settings, *turns))

    # Then none comes back sooner than 30 s
    for turn in turns:
        assert turn.status is NotificationStatus.RETRYING
        assert turn.retry_in_s is not None
        assert turn.retry_in_s >= 30


def test_a_hostile_retry_after_does_not_hold_a_retry_past_the_cap(settings: Settings) -> None:
    # Given a provider asked to retry in ten years (the limiter's own example of a hostile hint)
    ten_years_s = 10 * 365 * 24 * 3600.0
    turn = make_turn(
        1, result=transient(retry_after_s=ten_years_s), status=NotificationStatus.FAILED
    )

    # When the results are in
    Retries().after_send(batch_of(settings, turn))

    # Then the retry is still scheduled within the hub's cap on a provider's hint
    assert turn.status is NotificationStatus.RETRYING
    assert turn.retry_in_s is not None
    # (and within the SMS retry window of an hour, which began a moment ago)
    assert 3599 < turn.retry_in_s <= settings.delivery.max_retry_after_s == 3600


def test_a_transient_failure_at_the_attempt_limit_stays_failed(settings: Settings) -> None:
    # Given the 5th of 5 attempts failed transiently
    error = transient()
    turn = make_turn(1, attempts=5, result=error, status=NotificationStatus.FAILED)

    # When the results are in
    Retries().after_send(batch_of(settings, turn))

    # Then it is failed for good, saying why
    assert turn.status is NotificationStatus.FAILED
    assert turn.reason == f"{error} (max_attempts: gave up after 5 attempts)"
    assert turn.retry_in_s is None


def test_retries_use_the_channels_own_attempt_limit(configure: Callable[..., Settings]) -> None:
    # Given SMS allows 2 attempts although delivery allows 5
    settings = configure(channels__sms__max_attempts="2")
    first = make_turn(1, attempts=1, result=transient(), status=NotificationStatus.FAILED)
    second = make_turn(2, attempts=2, result=transient(), status=NotificationStatus.FAILED)

    # When the results are in
    Retries().after_send(batch_of(settings, first, second))

    # Then the first attempt is retried and the second is the last
    assert first.status is NotificationStatus.RETRYING
    assert second.status is NotificationStatus.FAILED
    assert second.reason.endswith("(max_attempts: gave up after 2 attempts)")


def test_an_unknown_outcome_is_held_by_default(settings: Settings) -> None:
    # Given SMS holds unknown outcomes (on_unknown = "hold") and a send timed out after going out
    error = unknown()
    turn = make_turn(1, result=error, status=NotificationStatus.UNKNOWN, reason=str(error))

    # When the results are in
    Retries().after_send(batch_of(settings, turn))

    # Then it stays unknown, for a person to review, and is not sent again
    assert (turn.status, turn.reason, turn.retry_in_s) == (
        NotificationStatus.UNKNOWN,
        str(error),
        None,
    )


def test_an_unknown_outcome_is_retried_when_the_channel_says_retry(
    configure: Callable[..., Settings],
) -> None:
    # Given SMS accepts duplicates over silence (on_unknown = "retry")
    settings = configure(channels__sms__on_unknown="retry")
    turn = make_turn(1, result=unknown(), status=NotificationStatus.UNKNOWN)

    # When the results are in
    Retries().after_send(batch_of(settings, turn))

    # Then it is sent again after a backoff
    assert turn.status is NotificationStatus.RETRYING
    assert turn.retry_in_s is not None
    assert 0 < turn.retry_in_s <= 2


@pytest.mark.parametrize("on_unknown", ["hold", "retry"])
def test_a_permanent_failure_is_never_retried(
    configure: Callable[..., Settings], on_unknown: str
) -> None:
    # Given a first attempt the provider rejected for good
    settings = configure(channels__sms__on_unknown=on_unknown)
    error = permanent()
    turn = make_turn(1, result=error, status=NotificationStatus.FAILED, reason=str(error))

    # When the results are in
    Retries().after_send(batch_of(settings, turn))

    # Then it stays failed, with the provider's reason
    assert (turn.status, turn.reason, turn.retry_in_s) == (
        NotificationStatus.FAILED,
        str(error),
        None,
    )


def test_retries_leave_sent_and_undecided_turns_alone(settings: Settings) -> None:
    # Given a sent turn, and a transient error on a turn another policy already queued
    sent = make_turn(1, result=Receipt("SM1"), status=NotificationStatus.SENT)
    queued = make_turn(
        2, result=transient(), status=NotificationStatus.WAITING, reason="rate limited"
    )

    # When the results are in
    Retries().after_send(batch_of(settings, sent, queued))

    # Then neither changes
    assert (sent.status, queued.status, queued.reason) == (
        NotificationStatus.SENT,
        NotificationStatus.WAITING,
        "rate limited",
    )


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 9, 10, 20, 60])
def test_backoff_stays_between_zero_and_its_ceiling(settings: Settings, attempt: int) -> None:
    # Given backoff 2 s doubling per attempt, capped at 300 s
    ceiling = min(300.0, 2.0 * 2 ** (attempt - 1))

    # When the backoff after this attempt is drawn many times
    delays = [backoff_s(attempt, settings) for _ in range(200)]

    # Then every draw is within [0, ceiling]
    assert all(0 <= delay <= ceiling for delay in delays)


def test_backoff_stays_within_its_ceiling_for_any_attempt_number(settings: Settings) -> None:
    # Given a channel that retries (almost) forever, on its 1100th attempt
    # When the backoff is drawn
    delay = backoff_s(1100, settings)

    # Then it is capped at backoff_max_s
    assert 0 <= delay <= 300


# ---- Announcer ---------------------------------------------------------------------------------


@dataclass
class RecordingPublish:
    """Stands in for ``hub.events.publish``: records each call, or raises ``fail_with``."""

    calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    fail_with: Exception | None = None

    def __call__(self, event_type: str, data: dict[str, Any], **options: Any) -> None:
        self.calls.append((event_type, data, options))
        if self.fail_with is not None:
            raise self.fail_with


@pytest.fixture
def publish() -> RecordingPublish:
    return RecordingPublish()


def recorded_failure(
    n: int = 1,
    *,
    status: NotificationStatus = NotificationStatus.FAILED,
    event_type: str = "user.registered",
    attempt_number: int = 3,
) -> Turn:
    turn = make_turn(
        n, attempts=2, event_type=event_type, status=status, reason=f"sms [503]: down {n}"
    )
    turn.recorded, turn.attempt_number = True, attempt_number
    return turn


def test_announcer_publishes_one_notification_failed_per_recorded_final_failure(
    settings: Settings, publish: RecordingPublish
) -> None:
    # Given a batch recorded one failed and one unknown notification
    batch = batch_of(
        settings,
        recorded_failure(1, status=NotificationStatus.FAILED),
        recorded_failure(2, status=NotificationStatus.UNKNOWN),
    )

    # When the outcomes are committed
    Announcer(publish).after_record(batch)

    # Then each is announced once, as notification.failed
    assert [(event_type, data["notification_id"]) for event_type, data, _ in publish.calls] == [
        ("notification.failed", "ntf_1"),
        ("notification.failed", "ntf_2"),
    ]


def test_announcement_carries_the_failure_and_is_keyed_by_attempt(
    settings: Settings, publish: RecordingPublish
) -> None:
    # Given a notification whose attempt number 3 failed for good
    turn = recorded_failure(7, status=NotificationStatus.UNKNOWN, attempt_number=3)

    # When the outcome is committed
    Announcer(publish).after_record(batch_of(settings, turn))

    # Then the event names the notification, its event, channel, recipient, status and error,
    # keyed so that a redelivered task announces it once, and kept if the broker is down
    [(event_type, data, options)] = publish.calls
    assert event_type == "notification.failed"
    assert data == {
        "notification_id": "ntf_7",
        "event_id": "evt_7",
        "event_type": "user.registered",
        "channel": "sms",
        "recipient": "+15550000007",
        "status": "unknown",
        "attempts": 2,
        "error": "sms [503]: down 7",
    }
    assert options == {"idempotency_key": "failed:ntf_7:3", "keep_if_broker_down": True}


def test_announcer_skips_a_failure_the_store_did_not_take(
    settings: Settings, publish: RecordingPublish
) -> None:
    # Given a failure that was not recorded (the sweeper gave the notification to another worker)
    turn = recorded_failure(1)
    turn.recorded = False

    # When the outcomes are committed
    Announcer(publish).after_record(batch_of(settings, turn))

    # Then nothing is announced
    assert publish.calls == []


@pytest.mark.parametrize(
    "status",
    [
        NotificationStatus.SENT,
        NotificationStatus.RETRYING,
        NotificationStatus.SUPPRESSED,
        NotificationStatus.WAITING,
    ],
)
def test_announcer_skips_outcomes_that_are_not_final_failures(
    settings: Settings, publish: RecordingPublish, status: NotificationStatus
) -> None:
    # Given a recorded outcome that is not a final failure
    turn = recorded_failure(1, status=status)

    # When the outcomes are committed
    Announcer(publish).after_record(batch_of(settings, turn))

    # Then nothing is announced
    assert publish.calls == []


def test_a_failed_failure_alert_is_never_announced(
    settings: Settings, publish: RecordingPublish
) -> None:
    # Given the alert about a failure itself failed for good
    turn = recorded_failure(1, event_type="notification.failed")

    # When the outcome is committed
    Announcer(publish).after_record(batch_of(settings, turn, channel="slack"))

    # Then no further notification.failed is published (no endless loop)
    assert publish.calls == []


@pytest.mark.parametrize(
    "error",
    [BrokerUnavailable("broker down"), EventError("invalid event", errors=[])],
    ids=["broker-unavailable", "event-error"],
)
def test_a_failed_announcement_is_logged_not_raised(
    settings: Settings,
    publish: RecordingPublish,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    # Given publishing fails
    publish.fail_with = error
    batch = batch_of(settings, recorded_failure(1), recorded_failure(2))

    # When the outcomes are committed
    with caplog.at_level(logging.ERROR, logger="hub.middleware.announcer"):
        Announcer(publish).after_record(batch)

    # Then each failure is tried and logged, and nothing is raised
    assert len(publish.calls) == 2
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 2
    assert "ntf_1" in logged[0] and str(error) in logged[0]


# ---- default_middleware ------------------------------------------------------------------------


def test_default_middleware_runs_in_policy_order(publish: RecordingPublish) -> None:
    # Given the hub's default policies
    middleware = default_middleware(
        StubRateLimiter(clock=FakeClock()), StubCircuitBreakers(), publish
    )

    # Then opt-outs, the poison guard and open circuits decide before the rate
    # limit spends tokens, retries settle a failure before the announcer
    # sees whether it is final, completion sees every fate settled, and
    # status webhooks report what was recorded
    assert [type(m) for m in middleware] == [
        Expiry,
        OptOut,
        PoisonGuard,
        CircuitBreaker,
        RateLimit,
        Retries,
        Announcer,
        Completion,
        StatusWebhooks,
    ]


def test_default_middleware_uses_the_limiter_and_publish_it_is_given(
    settings: Settings, publish: RecordingPublish, limiter: StubRateLimiter
) -> None:
    # Given the default policies over a paused limiter and a recording publish
    limiter.pause("sms", 5)
    middleware = default_middleware(limiter, StubCircuitBreakers(), publish)
    waiting = batch_of(settings, make_turn(1))
    failed = batch_of(settings, recorded_failure(2))

    # When their hooks run
    for m in middleware:
        m.before_send(waiting)
        m.after_record(failed)

    # Then the pause holds the turn and the failure is published through the given function
    assert fates(waiting) == [NotificationStatus.WAITING]
    assert [data["notification_id"] for _, data, _ in publish.calls] == ["ntf_2"]


# ---- Expiry ------------------------------------------------------------------------------------


def test_a_notification_past_its_ttl_is_expired_not_sent(settings: Settings) -> None:
    late = make_turn(1, expires_in_s=-5)
    in_time = make_turn(2, expires_in_s=60)
    forever = make_turn(3)

    batch = batch_of(settings, late, in_time, forever)

    Expiry().after_claim(None, batch)  # type: ignore[arg-type]  (it reads no store)

    assert fates(batch) == [NotificationStatus.EXPIRED, None, None]
    assert late.reason.startswith("expired:")
