"""Delivery channels, one module each over :class:`hub.channels.base.Channel`.

Channels know nothing of Celery or the store: they make one attempt to send
one rendered message and either return a :class:`Receipt` or raise a
:class:`~hub.errors.TransientError`, :class:`~hub.errors.PermanentError` or
:class:`~hub.errors.OutcomeUnknown`.
"""

from hub.channels.apprise import AppriseChannel
from hub.channels.base import Channel, Message, Outbox, Receipt
from hub.channels.email import EmailChannel
from hub.channels.slack import SlackChannel
from hub.channels.sms import SmsChannel
from hub.channels.webhook import WebhookChannel

CHANNELS: dict[str, type[Channel]] = {
    channel.name: channel
    for channel in (EmailChannel, SmsChannel, SlackChannel, WebhookChannel, AppriseChannel)
}

__all__ = [
    "CHANNELS",
    "AppriseChannel",
    "Channel",
    "EmailChannel",
    "Message",
    "Outbox",
    "Receipt",
    "SlackChannel",
    "SmsChannel",
    "WebhookChannel",
]
