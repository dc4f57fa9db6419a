"""Providers reporting outcomes: ``/v1/callbacks/{channel}/{provider}``.

Each channel that takes callbacks reads and authenticates them itself
(:meth:`hub.channels.base.Channel.status_report`); this module only finds the
channel and provider, and records what they report. The API imports no
vendor SDK: a channel loads what it needs when a callback arrives.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from hub import status_webhooks
from hub.channels.base import Callback, StatusReport
from hub.errors import InvalidSignature
from hub.settings import Settings
from hub.status_webhooks import StatusChange
from hub.store import notifications as stored_notifications
from hub.store import opt_outs
from hub.store.db import session
from hub.store.models import NotificationStatus

_STATUSES = {
    "delivered": NotificationStatus.DELIVERED,
    "undelivered": NotificationStatus.UNDELIVERED,
}


def add_callback_routes(app: FastAPI, settings: Settings) -> None:
    database_url = settings.resolved_database_url

    @app.post("/v1/callbacks/{channel}/{provider}", status_code=status.HTTP_204_NO_CONTENT)
    async def provider_callback(channel: str, provider: str, request: Request) -> None:
        """A provider's delivery report: marks the message ``delivered`` or ``undelivered``."""
        if channel not in settings.channel_classes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no callbacks for channel {channel!r}")
        provider_settings = settings.channels.of(channel).provider(provider)
        if provider_settings is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {channel} provider {provider!r}")
        channel_class = settings.channels.kind_of(channel, provider_settings)
        if not channel_class.callbacks:
            via = provider_settings.via
            whose = f"{channel} provider {provider!r}" if via else f"channel {channel!r}"
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no callbacks for {whose}")
        callback = Callback(str(request.url), await request.body(), request.headers)
        try:
            report = channel_class.status_report(provider_settings, callback)
        except InvalidSignature as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
        if report is not None:
            change = await run_in_threadpool(_record, database_url, channel, report)
            # After the commit; enqueueing never raises (hub.status_webhooks).
            await run_in_threadpool(status_webhooks.announce, settings, [change])

    @app.post("/v1/callbacks/twilio", status_code=status.HTTP_204_NO_CONTENT)
    async def twilio_status(request: Request) -> None:
        """The first path of Twilio's reports, kept for URLs already configured at Twilio."""
        default = settings.channels.of("sms").all_providers[0].name
        await provider_callback("sms", default, request)


def _record(database_url: str, channel: str, report: StatusReport) -> StatusChange:
    """Store the report; the change it made, for the status webhooks."""
    with session(database_url) as db:
        sent = stored_notifications.record_provider_status(
            db, channel, report.provider_message_id, _STATUSES[report.status], report.error
        )
        if sent is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"no {channel} message with id {report.provider_message_id!r}",
            )
        if report.opt_out:
            # The recipient as routed, which is what later sends are checked against.
            opt_outs.add_opt_out(db, channel, sent.recipient, report.error or "opted out")
        return StatusChange.of(sent)
