"""Spec: docker-compose.yml runs the scale-out deployment, and Docker accepts it where it exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing_service

COMPOSE = Path(__file__).parent.parent / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_it_runs_the_brokers_the_store_two_apis_workers_per_queue_one_beat_flower_and_mailpit(
    services: dict[str, Any],
) -> None:
    for name in ("redis", "rabbitmq", "postgres", "api", "beat", "flower", "mailpit"):
        assert name in services, name
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["deploy"]["replicas"] == 2
    workers = {name: s["command"] for name, s in services.items() if name.startswith("worker-")}
    queues = {command[command.index("-Q") + 1] for command in workers.values()}
    assert {"email*", "sms*", "alert*", "*.critical"} <= queues
    assert all("--concurrency" in command for command in workers.values())


def _compose() -> list[str] | None:
    """Docker Compose v2 (``docker compose``) or v1 (``docker-compose``), if installed."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_it() -> None:
    compose = _compose()
    if compose is None:
        missing_service(
            "docker compose config needs Docker Compose (docker compose or docker-compose)"
        )
    assert compose is not None
    checked = subprocess.run(
        [*compose, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
