"""The hub's one exception tree.

::

    HubError
    ├── ConfigError           bad settings key, unreadable settings file, missing credential
    ├── InputError            a caller's request is wrong (the API answers 4xx, the CLI exits 2)
    │   ├── EventError        a published event is invalid (unknown type, data fails its schema)
    │   ├── InvalidFilter     a list filter (``since=``, ``status=``) cannot be understood
    │   ├── InvalidSignature  a signed request (webhook, provider callback) is not authentic
    │   └── NameTaken         a name that must be unique is already used (an API key's)
    ├── TemplateError         a template is missing, does not compile, or lacks a variable
    ├── ServiceUnavailable    a service the hub needs is not there right now
    │   ├── BrokerUnavailable the broker refused or timed out a publish
    │   └── EmbeddedRedisError  the redis-server that `hub up` starts did not come up
    └── ChannelError          a delivery attempt failed
        ├── TransientError    worth retrying: timeout, rate limited, provider down
        ├── PermanentError    never worth retrying: invalid recipient, rejected, auth failed
        └── OutcomeUnknown    the provider may or may not have sent it (timeout after the
                              request went out, Twilio 20500): never silently resent

Errors carry data (the channel, the provider's code, ``retry_after_s``), so the
delivery task decides what to do from fields, never from message text.
"""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class ConfigError(HubError):
    """Settings are wrong; the message names the key and where it came from."""


class InputError(HubError):
    """Something a caller sent is wrong; retrying the same request cannot help."""


class EventError(InputError):
    """An event failed validation.

    ``errors`` is a list of ``{"loc": [...], "msg": ..., "type": ...}`` in the
    shape FastAPI uses for its own 422 answers, so clients parse one format.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class TemplateError(HubError):
    """A template could not be loaded or rendered."""

    def __init__(self, template: str, message: str) -> None:
        super().__init__(f"template {template!r}: {message}")
        self.template = template


class InvalidFilter(InputError):
    """A filter value could not be understood; the message names it."""


class InvalidSignature(InputError):
    """A signature is malformed, does not match, or is too old or new.

    ``reason`` is ``"malformed"``, ``"mismatch"`` or ``"expired"``; whichever it
    is, the receiver should reject the request.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NameTaken(InputError):
    """A name that must be unique is already used."""


class ServiceUnavailable(HubError):
    """A service the hub depends on cannot be reached right now; try again later."""


class BrokerUnavailable(ServiceUnavailable):
    """The broker could not take a message right now.

    ``maybe_taken`` says the request went out and no answer came back: the
    broker may hold the message after all.
    """

    def __init__(self, message: str, *, maybe_taken: bool = False) -> None:
        super().__init__(message)
        self.maybe_taken = maybe_taken


class EmbeddedRedisError(ServiceUnavailable):
    """The embedded redis-server did not start; the message points at its log."""


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
