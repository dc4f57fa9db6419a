"""Spec: concurrent publishes are stored together (group commit), each with its own answer.

A publish that finds no group being stored is stored at once; publishes that
arrive meanwhile wait and form the next group: one commit and one routing task
for all of them, and no added delay on quiet traffic.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import httpx
import pytest

from hub import events
from hub.events import Accepted
from hub.store.models import Event
from tests.conftest import Stack
from tests.smtp_sink import SmtpSink
from tests.test_publish_to_email import address, user


def test_publishes_arriving_during_a_store_form_the_next_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups: list[list[str]] = []
    first_stored = threading.Event()
    release_first = threading.Event()

    def store(stored: list[Event], keep_if_broker_down: bool = False) -> list[Accepted]:
        groups.append([event.id for event in stored])
        if len(groups) == 1:
            first_stored.set()
            release_first.wait(10)
        return [Accepted(event.id) for event in stored]

    monkeypatch.setattr(events, "_store_and_enqueue", store)
    coalescer = events._Coalescer(linger_s=0.0)

    async def publish_while_the_first_is_stored() -> list[Accepted]:
        first = asyncio.ensure_future(coalescer.submit(Event(id="e0")))
        await asyncio.to_thread(first_stored.wait, 10)
        later = [asyncio.ensure_future(coalescer.submit(Event(id=f"e{n}"))) for n in (1, 2, 3)]
        await asyncio.sleep(0)  # the three are queued behind the first group
        release_first.set()
        return await asyncio.gather(first, *later)

    answers = asyncio.run(publish_while_the_first_is_stored())

    assert groups == [["e0"], ["e1", "e2", "e3"]]
    assert [answer.id for answer in answers] == ["e0", "e1", "e2", "e3"]


def test_a_failed_group_fails_each_of_its_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    def store(stored: list[Event], keep_if_broker_down: bool = False) -> list[Accepted]:
        raise events.BrokerUnavailable("broker unavailable: test")

    monkeypatch.setattr(events, "_store_and_enqueue", store)
    coalescer = events._Coalescer(linger_s=0.01)

    async def publish_two() -> list[Accepted | BaseException]:
        submits = (coalescer.submit(Event(id=f"e{n}")) for n in (1, 2))
        return await asyncio.gather(*submits, return_exceptions=True)

    outcomes = asyncio.run(publish_two())

    assert [type(outcome) for outcome in outcomes] == [events.BrokerUnavailable] * 2


def test_forty_concurrent_publishes_each_get_their_own_event_and_one_email(
    stack: Stack, smtp: SmtpSink
) -> None:
    recipients = [address(f"group{n}") for n in range(40)]
    key = f"same-{uuid.uuid4().hex}"

    async def publish_all() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers) as http:
            bodies = [{"type": "user.registered", "data": user(to)} for to in recipients]
            # Two publishes of one idempotency key in the same burst.
            bodies += [{"type": "user.registered", "data": user(recipients[0]), "id": key}] * 2
            return await asyncio.gather(*(http.post("/v1/events", json=b) for b in bodies))

    responses = asyncio.run(publish_all())

    assert [r.status_code for r in responses] == [202] * 42
    answers = [r.json() for r in responses]
    assert len({a["id"] for a in answers[:40]}) == 40
    keyed = answers[40:]
    assert keyed[0]["id"] == keyed[1]["id"]
    assert sorted(a["duplicate"] for a in keyed) == [False, True]
    for answer in answers[:40]:
        stack.settled(answer["id"])
    stack.settled(keyed[0]["id"])
    assert [len(smtp.to(to)) for to in recipients[1:]] == [1] * 39
    assert len(smtp.to(recipients[0])) == 2  # its own event and the keyed one
