"""Spec: receivers can prove a webhook came from the hub, unchanged and recently."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from hub.errors import HubError
from hub.webhooks import InvalidSignature, sign, verify

SECRET = "whsec_test"
BODY = b'{"event":"task.failed","id":"evt_1"}'
NOW = 1_718_000_000


def test_a_signature_verifies_against_the_same_secret_and_body() -> None:
    verify(SECRET, BODY, sign(SECRET, BODY))


def test_the_header_is_a_timestamp_and_an_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert sign(SECRET, BODY, timestamp=NOW) == f"t={NOW},v1={expected}"


def test_a_tampered_body_is_rejected() -> None:
    header = sign(SECRET, BODY)

    with pytest.raises(InvalidSignature) as error:
        verify(SECRET, BODY.replace(b"evt_1", b"evt_2"), header)

    assert error.value.reason == "mismatch"


def test_a_wrong_secret_is_rejected() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify("whsec_other", BODY, sign(SECRET, BODY))


def test_a_timestamp_changed_to_look_fresh_is_rejected() -> None:
    old = sign(SECRET, BODY, timestamp=NOW - 3600)
    fresh = old.replace(f"t={NOW - 3600}", f"t={NOW}")

    with pytest.raises(InvalidSignature, match="does not match"):
        verify(SECRET, BODY, fresh, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "v1=abc",
        "t=1718000000",
        "t=soon,v1=abc",
        "t=1718000000,v1=",
        "t=1718000000,t=1718000001,v1=abc",
        "t=1718000000,v1=é",
    ],
)
def test_a_malformed_header_is_rejected(header: str) -> None:
    with pytest.raises(InvalidSignature):
        verify(SECRET, BODY, header, now=NOW)


def test_a_signature_older_than_five_minutes_is_a_replay() -> None:
    header = sign(SECRET, BODY, timestamp=NOW - 301)

    with pytest.raises(InvalidSignature) as error:
        verify(SECRET, BODY, header, now=NOW)

    assert error.value.reason == "expired"


def test_a_signature_from_too_far_in_the_future_is_rejected() -> None:
    header = sign(SECRET, BODY, timestamp=NOW + 301)

    with pytest.raises(InvalidSignature, match="from now"):
        verify(SECRET, BODY, header, now=NOW)


def test_signatures_within_the_tolerance_verify() -> None:
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=NOW - 299), now=NOW)
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=NOW + 299), now=NOW)
    verify(SECRET, BODY, sign(SECRET, BODY, timestamp=NOW - 3000), tolerance_s=3600, now=NOW)


def test_any_of_several_v1_values_may_match_during_secret_rotation() -> None:
    old = sign("whsec_old", BODY, timestamp=NOW)
    new = sign(SECRET, BODY, timestamp=NOW)
    header = f"{new},v1={old.partition(',v1=')[2]}"

    verify("whsec_old", BODY, header, now=NOW)
    verify(SECRET, BODY, header, now=NOW)


def test_unknown_schemes_beside_v1_are_ignored() -> None:
    header = sign(SECRET, BODY, timestamp=NOW) + ",v0=legacy"

    verify(SECRET, BODY, header, now=NOW)


def test_verify_uses_the_clock_when_now_is_not_given() -> None:
    with pytest.raises(InvalidSignature):
        verify(SECRET, BODY, sign(SECRET, BODY, timestamp=int(time.time()) - 600))


def test_invalid_signature_is_a_hub_error() -> None:
    assert issubclass(InvalidSignature, HubError)
