"""Delivery channels, one module each over :class:`hub.channels.base.Channel`.

Channels know nothing of Celery or the store: they make one attempt to send
one rendered message and either return a :class:`Receipt` or raise a
:class:`~hub.errors.TransientError` / :class:`~hub.errors.PermanentError`.
"""

from hub.channels.base import Channel, Message, Outbox, Receipt
from hub.channels.email import EmailChannel

CHANNELS: dict[str, type[Channel]] = {EmailChannel.name: EmailChannel}

__all__ = ["CHANNELS", "Channel", "EmailChannel", "Message", "Outbox", "Receipt"]
