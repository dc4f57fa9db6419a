"""Celery queue names, known without building the Celery app (the CLI needs them too).

``celery`` is Celery's default, so other apps' ``send_task("hub.publish")``
lands there with no queue argument; ``events`` takes routing and the
sweeper; each channel family gets a queue of its own, so each can get its own
workers and a slow provider never holds up another.
"""

DEFAULT = "celery"
EVENTS = "events"
BY_CHANNEL = {
    "email": "email",
    "sms": "sms",
    "slack": "alert",
    "webhook": "alert",
    "apprise": "alert",
}
ALL = (DEFAULT, EVENTS, *dict.fromkeys(BY_CHANNEL.values()))
