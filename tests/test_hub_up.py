"""Spec: `hub up` on a machine with nothing else runs the whole stack and stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import psutil

from tests.conftest import wait_until
from tests.smtp_sink import _free_port


class Output:
    """Collects a process's output and signals when a line containing ``marker`` appears."""

    def __init__(self, process: subprocess.Popen[str], marker: str) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self._marker = marker
        threading.Thread(target=self._drain, args=(process,), daemon=True).start()

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)
            if self._marker in line:
                self.seen.set()


def test_hub_up_delivers_to_the_outbox_and_leaves_no_process_behind(tmp_path: Path) -> None:
    redis_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    # Not the default 6390, which a developer's own `hub up` may hold.
    env["HUB_EMBEDDED_REDIS_PORT"] = str(redis_port)
    port = _free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "hub", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(up, "hub is up")
    try:
        assert output.seen.wait(60), "".join(output.lines)
        children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "worker" in names and "beat" in names and "api" in names

        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert key in "".join(output.lines)
        to = f"new-user-{uuid.uuid4().hex[:6]}@example.com"
        auth = {"Authorization": f"Bearer {key}"}
        base = f"http://127.0.0.1:{port}"
        published = httpx.post(
            f"{base}/v1/events",
            headers=auth,
            json={
                "type": "user.registered",
                "data": {"user_id": "1", "email": to, "name": "Grace"},
            },
        )
        assert published.status_code == 202, published.text
        event_id = published.json()["id"]

        outbox = tmp_path / "var" / "outbox" / "email"
        [eml] = wait_until(lambda: list(outbox.glob(f"*{to}.eml")), 30, "the .eml file")
        email = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert email["Subject"] == "Welcome, Grace!"
        event = httpx.get(f"{base}/v1/events/{event_id}", headers=auth).json()
        assert [n["status"] for n in event["notifications"]] == ["sent"]
        assert (tmp_path / "var" / "redis" / "appendonly.aof").stat().st_size > 0
        # What holds addresses and secrets is readable by its owner only.
        var = tmp_path / "var"
        for private in (var, var / "redis", outbox):
            assert private.stat().st_mode & 0o777 == 0o700, private
        for private in (var / "hub.db", var / "dev-api-key", eml, var / "redis" / "appendonly.aof"):
            assert private.stat().st_mode & 0o777 == 0o600, private
        assert f"broker   redis://127.0.0.1:{redis_port}/0" in "".join(output.lines)

        second = subprocess.run(
            [sys.executable, "-m", "hub", "up", "--port", str(_free_port())],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "another `hub up` is running on" in second.stderr

        # A worker that dies is restarted, and delivery goes on. (The other
        # worker serves routing and *.critical; the main one serves the rest.)
        workers = [c for c in psutil.Process(up.pid).children() if "worker" in c.cmdline()]
        assert len(workers) == 2
        [worker] = [c for c in workers if not any("critical" in arg for arg in c.cmdline())]
        worker.kill()
        wait_until(lambda: "worker exited (code -9); restarting" in "".join(output.lines))
        again = f"after-restart-{uuid.uuid4().hex[:6]}@example.com"
        published = httpx.post(
            f"{base}/v1/events",
            headers=auth,
            json={"type": "user.registered", "data": {"user_id": "2", "email": again, "name": "G"}},
        )
        assert published.status_code == 202, published.text
        wait_until(lambda: list(outbox.glob(f"*{again}.eml")), 60, "an email after the restart")
        children = psutil.Process(up.pid).children(recursive=True)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)

    assert code == 0, "".join(output.lines)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
