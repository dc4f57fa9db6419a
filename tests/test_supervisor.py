"""Spec: `hub up`'s supervisor restarts a child that dies, and stops the stack on a crash loop."""

from __future__ import annotations

import sys

import pytest

from hub import supervisor
from hub.supervisor import Supervisor, child_env
from tests.conftest import wait_until


def test_a_child_that_dies_is_restarted_and_counted() -> None:
    processes = Supervisor(child_env())
    first = processes.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first.kill()

        wait_until(lambda: processes.restarts["sleeper"] == 1, 10, "the restart")
        wait_until(lambda: processes.children["sleeper"].pid != first.pid, 10, "a new process")
        assert processes.children["sleeper"].poll() is None
        assert processes.crash_looping is None
    finally:
        processes.stop()


def test_a_child_that_keeps_dying_stops_the_stack_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no backoff between restarts (the count, not the pace, is what is tested)
    monkeypatch.setattr(supervisor, "MAX_BACKOFF_S", 0.0)
    processes = Supervisor(child_env())
    processes.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        crashed = processes.wait()
    finally:
        processes.stop()

    assert crashed == "crasher"
    assert processes.restarts["crasher"] == supervisor.CRASH_LOOP_RESTARTS
