"""The seed-style baseline: a minimal Celery app that knows nothing of the hub.

Two tasks, run by ``python -m celery -A bench.baseline worker`` with the same
worker flags as ``hub worker`` (see :data:`WORKER_FLAGS`):

- ``bench.welcome`` renders ``templates/user.registered`` with plain Jinja
  (a ``FileSystemLoader`` over the repository's ``templates/``) and sends it
  over a NEW SMTP connection per email (``smtplib``), as the seed did.
- ``bench.noop`` does nothing but ``INCR`` a Redis counter, and notes the time
  when the counter reaches ``total``: bare Celery's own cost per task.

Configured by env vars: ``BENCH_BROKER_URL``, ``BENCH_SMTP_HOST``, ``BENCH_SMTP_PORT``.
"""

from __future__ import annotations

import os
import smtplib
import time
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jinja2
import redis
from celery import Celery

QUEUE = "bench"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FROM_ADDRESS = "Hub <hub@localhost>"
NOOP_COUNT_KEY = "bench:noop:count"
NOOP_DONE_KEY = "bench:noop:done_at"
# What `hub worker` passes to Celery besides the queues and concurrency.
WORKER_FLAGS = ["--pool", "prefork", "--loglevel", "INFO", "-E"]
WORKER_FLAGS += ["--without-mingle", "--without-gossip"]

app = Celery("bench_baseline", broker=os.environ.get("BENCH_BROKER_URL", "redis://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
)
_redis: tuple[int, redis.Redis] | None = None


def build_welcome(event_id: str, data: dict[str, Any]) -> EmailMessage:
    """The welcome email for ``data``: subject, text and HTML, as the hub builds it."""
    context = {"event": {"id": event_id, "type": "user.registered"}, "data": data}
    context["recipient"] = data["email"]
    parts = {
        part: _env.get_template(f"user.registered/{part}").render(context).strip()
        for part in ("subject.txt", "body.txt", "body.html")
    }
    email = EmailMessage()
    email["From"] = FROM_ADDRESS
    email["To"] = data["email"]
    email["Subject"] = " ".join(parts["subject.txt"].split())
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = f"<ntf_{event_id}_email@localhost>"
    email["X-Hub-Event"] = f"user.registered {event_id}"
    email.set_content(parts["body.txt"])
    email.add_alternative(parts["body.html"], subtype="html")
    return email


@app.task(name="bench.welcome")
def welcome(event_id: str, data: dict[str, Any]) -> None:
    """Render and send one welcome email over its own SMTP connection."""
    email = build_welcome(event_id, data)
    host = os.environ.get("BENCH_SMTP_HOST", "127.0.0.1")
    with smtplib.SMTP(host, int(os.environ["BENCH_SMTP_PORT"]), timeout=10) as smtp:
        smtp.send_message(email)


@app.task(name="bench.noop")
def noop(total: int) -> None:
    """Count this task done; the one that completes ``total`` records the time."""
    client = _client()
    if client.incr(NOOP_COUNT_KEY) == total:
        client.set(NOOP_DONE_KEY, repr(time.time()))


def _client() -> redis.Redis:
    # One client per worker process, made after the fork.
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_BROKER_URL"]))
    return _redis[1]
