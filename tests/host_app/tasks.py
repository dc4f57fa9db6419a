"""A billing service's Celery app: its own code and broker, not a hub.

It knows the hub only through the integration's two lines. The test that
starts it as a ``celery worker`` sets its broker, how it publishes
(``HOST_PUBLISH_VIA=http`` with the hub's URL and key, or ``broker``) and the
service name through ``HOST_*`` variables; no ``HUB_*`` variable reaches it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

app = Celery("billing", broker=os.environ["HOST_BROKER_URL"])
# Its own queue: on a broker shared with the hub, the hub's `celery` queue
# (where hub.publish goes) is left to the hub's workers.
app.conf.update(task_default_queue="billing", task_ignore_result=True)

SERVICE = os.environ["HOST_SERVICE"]


class ChargeDeclined(Exception):
    """The card was declined."""


@app.task(name="billing.charge")
def charge(customer: dict[str, Any], amount: int, password: str = "", fail: bool = True) -> int:
    """Fails with ChargeDeclined unless ``fail`` is false."""
    if fail:
        raise ChargeDeclined(f"card of customer {customer.get('id')} declined for {amount}")
    return amount


@app.task(name="billing.refund")
def refund() -> None:
    """Always fails: a marker that whatever was sent before it has been handled."""
    raise ChargeDeclined("refunds are closed")


# The integration's two lines, in one of its two forms.
from hub.integrations.celery import install  # noqa: E402 - after the app, as a user would add it

if os.environ["HOST_PUBLISH_VIA"] == "broker":
    install(app, broker=True, service=SERVICE)
else:
    install(app, url=os.environ["HOST_HUB_URL"], api_key=os.environ["HOST_KEY"], service=SERVICE)
