"""One beat per deployment: the lock in each of its homes, and two `hub beat` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.beat_lock import BeatLock, FileLock, PostgresLock, RedisLock, run_locked
from tests.conftest import hub_env, missing_service, other_redis_db, start_hub_process, wait_until


def test_a_file_lock_is_held_by_one_holder_until_released(tmp_path: Path) -> None:
    # Given a beat holding the file lock
    first, second = FileLock(tmp_path / "beat.lock"), FileLock(tmp_path / "beat.lock")
    assert first.acquire()

    # Then a second cannot take it until the first lets go
    assert not second.acquire()
    assert first.renew()
    first.release()
    assert second.acquire()
    second.release()


def test_a_redis_lock_expires_when_its_holder_stops_renewing(broker_url: str) -> None:
    # Given a beat holding a lock with a 1 s TTL
    url = other_redis_db(broker_url)
    first, second = RedisLock(url, ttl_s=1.0), RedisLock(url, ttl_s=1.0)
    assert first.acquire()

    # Then another cannot take it or renew it while it is held
    assert not second.acquire()
    assert not second.renew()
    assert first.renew()

    # When the holder stops renewing (it died), the lock is free within the TTL
    wait_until(second.acquire, 3, "the lock to expire")
    assert not first.renew()
    first.release()  # releasing a lock no longer ours leaves the new holder's alone
    assert second.renew()
    second.release()


def test_a_postgres_advisory_lock_is_held_by_one_session() -> None:
    url = os.environ.get("HUB_TEST_DATABASE_URL")
    if not url:
        missing_service("the PostgreSQL lock needs HUB_TEST_DATABASE_URL")
    # Given a beat holding the advisory lock on its own connection
    first, second = PostgresLock(url, ttl_s=3.0), PostgresLock(url, ttl_s=3.0)
    try:
        assert first.acquire()
        # Then another session cannot take it
        assert not second.acquire()
        assert first.renew()
        # When the holder's session ends, the lock is free
        first.release()
        assert second.acquire()
        assert not first.renew()
    finally:
        first.release()
        second.release()


class LosingLock(BeatLock):
    """Free at every try; its first holding is lost at the first renewal."""

    where = "memory"

    def __init__(self) -> None:
        self.renewals = 0

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        self.renewals += 1
        return self.renewals > 1

    def release(self) -> None:
        pass


def test_a_beat_that_loses_its_lock_stops_and_goes_back_to_standby() -> None:
    runs: list[str] = []
    said: list[str] = []

    def start_beat(on_stop: Callable[[Callable[[], None]], None]) -> None:
        stopped = threading.Event()
        on_stop(stopped.set)
        if not runs:
            runs.append("first")
            assert stopped.wait(5), "the renewer did not stop beat"
        else:
            runs.append("second")  # ends on its own (a signal): run_locked returns

    run_locked(LosingLock(), 0.3, start_beat, said.append)

    assert runs == ["first", "second"]
    assert said[0].startswith("holding the beat lock")
    assert said[1].startswith("lost the beat lock")
    assert said[2].startswith("holding the beat lock")


@pytest.fixture
def beat_env(tmp_path: Path, broker_url: str) -> dict[str, str]:
    env = hub_env(tmp_path, other_redis_db(broker_url), 25, f"sqlite:///{tmp_path / 'hub.db'}")
    env["HUB_BEAT__LOCK_TTL"] = "3s"
    return env


@pytest.fixture
def beats(tmp_path: Path, beat_env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_second_beat_waits_as_standby_and_takes_over_when_the_first_dies(
    tmp_path: Path, beat_env: dict[str, str], beats: list[subprocess.Popen[bytes]]
) -> None:
    first_log, second_log = tmp_path / "beat-1.log", tmp_path / "beat-2.log"

    # Given a running beat
    beats.append(start_hub_process(["beat"], beat_env, first_log))
    wait_until(lambda: "holding the beat lock" in _read(first_log), 30, "the first beat")

    # When a second one starts
    beats.append(start_hub_process(["beat"], beat_env, second_log))

    # Then it says another beat holds the lock, and keeps waiting
    wait_until(lambda: "another beat holds the lock" in _read(second_log), 30, "the standby")
    time.sleep(4)  # longer than the TTL: the first keeps renewing, the second keeps waiting
    assert beats[1].poll() is None, _read(second_log)
    assert "holding the beat lock" not in _read(second_log)
    assert "beat: Starting" not in _read(second_log)

    # When the first dies without a word (SIGKILL: no release)
    os.killpg(beats[0].pid, signal.SIGKILL)
    died = time.monotonic()

    # Then the standby takes over within the TTL (3 s) plus its poll
    wait_until(lambda: "holding the beat lock" in _read(second_log), 10, "the takeover")
    assert time.monotonic() - died < 3 + 0.5 + 1.5, _read(second_log)
    wait_until(lambda: "beat: Starting" in _read(second_log), 30, "beat to start")


def test_a_beat_stopped_by_a_signal_lets_a_standby_take_over_at_once(
    tmp_path: Path, beat_env: dict[str, str], beats: list[subprocess.Popen[bytes]]
) -> None:
    first_log, second_log = tmp_path / "beat-1.log", tmp_path / "beat-2.log"
    beats.append(start_hub_process(["beat"], beat_env, first_log))
    wait_until(lambda: "beat: Starting" in _read(first_log), 30, "the first beat")
    beats.append(start_hub_process(["beat"], beat_env, second_log))
    wait_until(lambda: "another beat holds the lock" in _read(second_log), 30, "the standby")

    # When the first is stopped as a supervisor stops it
    beats[0].terminate()
    assert beats[0].wait(15) == 0, _read(first_log)

    # Then it released the lock: the standby holds it at its next poll
    wait_until(lambda: "holding the beat lock" in _read(second_log), 3, "the takeover")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
