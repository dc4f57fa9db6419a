"""The API's memory while it refuses large bodies.

Run by hand: ``python -m bench.body_memory [--megabytes 100] [--concurrent 3]``.
It starts an embedded redis-server and one ``hub api`` on the bundled
``settings.toml``, measures the API process's resident memory, then sends
``--concurrent`` bodies of ``--megabytes`` at once, three ways: with a
``Content-Length`` and no key, with a length and a valid key, and chunked
(no length) with a valid key. It samples the API's memory every 10 ms while
they are answered and prints the growth over the idle baseline for each way.
The goal: under 50 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from hub import keys
from hub.embedded import EmbeddedRedis
from hub.store.db import migrate
from tests.conftest import _healthy
from tests.smtp_sink import _free_port

MiB = 1024 * 1024


def _body(megabytes: int) -> bytes:
    return b'{"type": "user.registered", "data": {"pad": "' + b"x" * (megabytes * MiB) + b'"}}'


def _chunked(megabytes: int) -> Iterator[bytes]:
    yield b'{"type": "user.registered", "data": {"pad": "'
    for _ in range(megabytes * 4):
        yield b"x" * (MiB // 4)
    yield b'"}}'


def _send(url: str, key: str | None, chunked: bool, megabytes: int, codes: list[int]) -> None:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = _chunked(megabytes) if chunked else _body(megabytes)
    try:
        codes.append(httpx.post(url, content=content, headers=headers, timeout=120).status_code)
    except httpx.HTTPError:
        codes.append(0)  # the connection was closed after the answer


def peak_growth(
    api: psutil.Process, url: str, key: str | None, chunked: bool, megabytes: int, concurrent: int
) -> tuple[float, list[int]]:
    """MB of resident memory the API grew by, at its peak, while refusing the bodies."""
    baseline = api.memory_info().rss
    codes: list[int] = []
    senders = [
        threading.Thread(target=_send, args=(url, key, chunked, megabytes, codes))
        for _ in range(concurrent)
    ]
    for sender in senders:
        sender.start()
    peak = baseline
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, api.memory_info().rss)
        time.sleep(0.01)
    return (peak - baseline) / MiB, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        redis = EmbeddedRedis(home / "redis")
        database_url = f"sqlite:///{home / 'hub.db'}"
        migrate(database_url)
        key = keys.create_key(database_url, "bench")
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_BROKER_URL": redis.start(),
            "HUB_DATABASE_URL": database_url,
            "HUB_VAR_DIR": str(home / "var"),
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "hub", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while not _healthy(base) and time.monotonic() < deadline:
                time.sleep(0.1)
            process = psutil.Process(api.pid)
            url = f"{base}/v1/events"
            print(f"{args.concurrent} concurrent bodies of {args.megabytes} MB")
            for label, use_key, chunked in [
                ("Content-Length, no key", None, False),
                ("Content-Length, valid key", key, False),
                ("chunked, valid key", key, True),
            ]:
                growth, codes = peak_growth(
                    process, url, use_key, chunked, args.megabytes, args.concurrent
                )
                print(f"  {label:28} answers {sorted(codes)}  API grew {growth:6.1f} MB")
        finally:
            api.terminate()
            api.wait(10)
            redis.stop()


if __name__ == "__main__":
    main()
