"""Spec: hub processes log JSON lines with --log-format json, carrying the event's id.

Celery's line per task (received, succeeded) moves to DEBUG: at INFO, a busy
worker would write two lines per message and bury what matters.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from hub import logs
from tests.conftest import other_redis_db, running_stack, wait_until
from tests.smtp_sink import SmtpSink


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_worker_with_log_format_json_writes_json_lines_carrying_the_event_id(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, smtp: SmtpSink
) -> None:
    home = tmp_path_factory.mktemp("json-logs")
    args = ("--concurrency", "1", "--log-format", "json")
    with running_stack(home, other_redis_db(broker_url), smtp, worker_args=args) as stack:
        # task.retried has no bundled subscription: routing warns about it.
        event_id = stack.publish(
            "task.retried",
            {
                "service": "billing",
                "task_name": "charge",
                "task_id": "t1",
                "exception": "TimeoutError",
                "message": "slow",
                "retries": 1,
            },
        )

        def warned() -> dict[str, Any] | None:
            for line in _json_lines(home / "worker.log"):
                if "matches no subscription" in line["message"]:
                    return line
            return None

        line = wait_until(warned, 20, "the routing warning")

    assert line["event_id"] == event_id
    assert line["level"] == "warning" and line["logger"] == "hub.routing"
    text = (home / "worker.log").read_text(errors="replace")
    assert "celery@" in text and " ready." in text  # Celery's own lines are JSON too
    assert not any("succeeded in" in one["message"] for one in _json_lines(home / "worker.log"))


def test_a_json_line_has_time_level_logger_message_ids_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("hub.test").makeRecord(
            "hub.test",
            logging.ERROR,
            __file__,
            1,
            "notification %s failed",
            ("ntf_1",),
            exc_info=sys.exc_info(),
            extra=logs.ids("evt_1", "ntf_1"),
        )

    line = json.loads(logs.JsonFormatter().format(record))

    assert line["message"] == "notification ntf_1 failed"
    assert (line["level"], line["logger"]) == ("error", "hub.test")
    assert (line["event_id"], line["notification_id"]) == ("evt_1", "ntf_1")
    assert line["at"].endswith("Z") and "ValueError: boom" in line["exception"]
