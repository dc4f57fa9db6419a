"""Delivery channels, one module each over :class:`hub.channels.base.Channel`.

Channels know nothing of Celery or the store: they make one attempt to send
one rendered message and either return a :class:`~hub.channels.base.Receipt`
or raise a :class:`~hub.errors.TransientError`,
:class:`~hub.errors.PermanentError` or :class:`~hub.errors.OutcomeUnknown`.

:data:`CHANNELS` is the registry. It names each channel class by import path,
so this package imports nothing on its own: settings can validate every
channel's section, and pure routing can run, without loading a vendor SDK (a
channel imports its SDK when it starts). Adding a channel is one module plus
one line here; channels outside the hub come from the ``extra_channels``
setting or the ``hub.channels`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.channels.base import Channel

CHANNELS: dict[str, str] = {
    "email": "hub.channels.email:EmailChannel",
    "sms": "hub.channels.sms:SmsChannel",
    "slack": "hub.channels.slack:SlackChannel",
    "webhook": "hub.channels.webhook:WebhookChannel",
    "apprise": "hub.channels.apprise:AppriseChannel",
}
ENTRY_POINT_GROUP = "hub.channels"


def import_channel(path: str) -> type[Channel[Any]]:
    """The channel class at ``"module:Class"``; ``ImportError`` or ``TypeError`` if it is none."""
    module_name, _, class_name = path.partition(":")
    found = getattr(importlib.import_module(module_name), class_name, None)
    # Checked by shape: importing the base here would make settings import it too.
    if not (isinstance(found, type) and hasattr(found, "settings_model")):
        raise TypeError(f"{path!r} is not a channel class (hub.channels.base.Channel)")
    channel: type[Channel[Any]] = found
    return channel


def channel_classes(extra: Iterable[str] = ()) -> dict[str, type[Channel[Any]]]:
    """Every channel by name: the built-in ones, installed plugins, then ``extra`` paths.

    A later entry with the same name replaces an earlier one, so a plugin can
    stand in for a built-in channel.
    """
    paths = [*CHANNELS.values()]
    paths += [entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)]
    paths += list(extra)
    classes = [import_channel(path) for path in paths]
    return {channel.name: channel for channel in classes}
