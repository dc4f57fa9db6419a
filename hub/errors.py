"""The hub's one exception tree.

::

    HubError
    ├── ConfigError           bad settings key, unreadable settings file, missing credential
    ├── EventError            a published event is invalid (unknown type, data fails its schema)
    ├── TemplateError         a template is missing, does not compile, or lacks a variable
    ├── BrokerUnavailable     the broker refused or timed out a publish
    └── ChannelError          a delivery attempt failed
        ├── TransientError    worth retrying: timeout, rate limited, provider down
        ├── PermanentError    never worth retrying: invalid recipient, rejected, auth failed
        └── OutcomeUnknown    the provider may or may not have sent it (timeout after the
                              request went out, Twilio 20500): never silently resent

Errors carry data (the channel, the provider's code, ``retry_after_s``), so the
delivery task decides what to do from fields, never from message text.
"""

from __future__ import annotations


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class ConfigError(HubError):
    """Settings are wrong; the message names the key and where it came from."""


class EventError(HubError):
    """An event failed validation.

    ``errors`` is a list of ``{"loc": [...], "msg": ..., "type": ...}`` in the
    shape FastAPI uses for its own 422 answers, so clients parse one format.
    """

    def __init__(self, message: str, errors: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.errors = errors


class TemplateError(HubError):
    """A template could not be loaded or rendered."""

    def __init__(self, template: str, message: str) -> None:
        super().__init__(f"template {template!r}: {message}")
        self.template = template


class BrokerUnavailable(HubError):
    """The broker could not take a message right now."""


class ChannelError(HubError):
    """A delivery attempt failed. Subclasses say whether a retry can help."""

    def __init__(
        self,
        message: str,
        *,
        channel: str,
        provider_code: str | int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.channel = channel
        self.provider_code = provider_code
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        code = f" [{self.provider_code}]" if self.provider_code is not None else ""
        return f"{self.channel}{code}: {self.args[0]}"


class TransientError(ChannelError):
    """The attempt may succeed later: retry with backoff (at least ``retry_after_s``)."""


class PermanentError(ChannelError):
    """The attempt will never succeed as is: fail the notification now.

    ``opt_out`` says the recipient asked not to be contacted on this channel
    again (an SMS STOP); the hub then suppresses later messages to them.
    """

    def __init__(
        self,
        message: str,
        *,
        channel: str,
        provider_code: str | int | None = None,
        opt_out: bool = False,
    ) -> None:
        super().__init__(message, channel=channel, provider_code=provider_code)
        self.opt_out = opt_out


class OutcomeUnknown(ChannelError):
    """The provider may have accepted the message: retrying risks a duplicate."""
