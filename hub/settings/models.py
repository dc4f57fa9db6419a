"""The sections of the settings, as pydantic models (the root is :class:`hub.settings.Settings`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hub.errors import ConfigError
from hub.settings.units import Rate, parse_duration

if TYPE_CHECKING:
    from jwt import PyJWKSet

    from hub.channels.base import Channel


def _valid_rate(value: str) -> str:
    """Empty (no limit) or a rate like ``"10/s"``; a ValueError saying what is wrong."""
    if value:
        try:
            Rate.parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


# A rate limit as settings spell it: "10/s", "50/m", "1/5s"; empty for none.
RateText = Annotated[str, AfterValidator(_valid_rate)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# JWT algorithms by the kind of key that verifies them: never mixed, so a
# public key can never be taken for an HMAC secret (RFC 8725, 2.1).
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_PUBLIC_KEY_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)


class JwtSettings(_Strict):
    """``[api.jwt]``: bearer JWTs from an identity provider, accepted beside API keys."""

    # Claims every token must carry.
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    # Exactly one: a JWKS file of public keys, picked by the token's kid, or a shared secret.
    jwks_file: Path | None = None
    secret: SecretStr | None = None
    # Empty: RS256 and ES256 with jwks_file, HS256 with secret.
    algorithms: list[str] = Field(default_factory=list)
    # Clock skew allowed on exp and nbf.
    leeway_s: float = Field(30.0, ge=0, le=300)

    @field_validator("jwks_file")
    @classmethod
    def _usable_jwks(cls, path: Path | None) -> Path | None:
        if path is not None:
            cls.read_jwks(path)
        return path

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HMAC key at least as long as the hash, or it can be guessed.
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("an HMAC secret needs at least 32 bytes (openssl rand -hex 32)")
        return secret

    @field_validator("algorithms")
    @classmethod
    def _fit_the_key(cls, algorithms: list[str], info: ValidationInfo) -> list[str]:
        hmac = info.data.get("secret") is not None
        fitting = _HMAC_ALGORITHMS if hmac else _PUBLIC_KEY_ALGORITHMS
        if unfit := [name for name in algorithms if name not in fitting]:
            key = "api.jwt.secret" if hmac else "api.jwt.jwks_file"
            raise ValueError(
                f"{', '.join(unfit)} cannot be verified with {key}; "
                f"expected some of {', '.join(fitting)}"
            )
        return algorithms

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> JwtSettings:
        if (self.jwks_file is None) == (self.secret is None):
            given = "both are set" if self.secret is not None else "neither is set"
            raise ValueError(f"set one of api.jwt.jwks_file or api.jwt.secret ({given})")
        return self

    @property
    def allowed_algorithms(self) -> list[str]:
        """``algorithms``, or the usual ones for the kind of key."""
        if self.algorithms:
            return self.algorithms
        return ["HS256"] if self.secret is not None else ["RS256", "ES256"]

    @staticmethod
    def read_jwks(path: Path) -> PyJWKSet:
        """The keys in the JWKS file at ``path``; ValueError saying what is wrong with it."""
        # Imported here: only a hub that verifies tokens pays for PyJWT.
        from jwt import PyJWKSet, PyJWTError

        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f'{path} is not a JWKS: expected {{"keys": [...]}}')
        if any(isinstance(key, dict) and "d" in key for key in document["keys"]):
            raise ValueError(f"{path} holds a private key: give the hub only public keys")
        try:
            key_set = PyJWKSet.from_dict(document)
        except PyJWTError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if any(key.key_id is None for key in key_set.keys):
            raise ValueError(f"{path}: every key needs a kid (tokens name their key by it)")
        return key_set


# api.public_url: a base URL, then what it must not hold: anything but
# printable ASCII, and what would end a header's <url> or an HTML attribute.
_PUBLIC_URL = re.compile(r"https?://[^/?#]+(/[^?#]*)?")
_UNSAFE_IN_URL = re.compile(r"[^!-~]|[<>\"'\\]")


class ApiSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Publishes arriving while a group is being stored make the next group on
    # their own; this waits longer before each group, for larger groups still.
    publish_linger_ms: float = Field(0.0, ge=0, le=1000)
    # One log line per request costs a tenth of a publish's time.
    access_log: bool = False
    # FastAPI's native OpenTelemetry spans and metrics, for the global providers.
    opentelemetry: bool = False
    # Limits on what a request may carry, checked before the body is parsed
    # (sizes before it is read at all), so no request can exhaust memory.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(1000, ge=1, le=10_000)
    max_depth: int = Field(32, ge=2, le=200)
    max_string_bytes: int = Field(64 * 1024, ge=16)
    # Requests per API key, e.g. "100/s": that many at once, then evenly
    # spread; over it gets 429. Shared through Redis; empty: no limit.
    rate_limit_per_key: RateText = ""
    # Bearer JWTs accepted beside API keys; None (no [api.jwt] table): keys only.
    jwt: JwtSettings | None = None
    # The base of every link the hub sends (unsubscribe, ack, UI), as people
    # reach the API; empty: http://{host}:{port}, right only on one machine.
    public_url: str = ""
    # Where /metrics is served instead of the API's own port, e.g. "0.0.0.0:9100"
    # (a port scrapers reach but the public does not); empty: the API's port.
    metrics_address: str = ""

    @field_validator("metrics_address")
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        if address:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError('expected "host:port", e.g. "0.0.0.0:9100"')
        return address

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """``metrics_address`` as (host, port), IPv6 brackets removed; None: the API's port."""
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, url: str) -> str:
        # Written into email headers and pages: a stray character there breaks every link.
        if url and (not _PUBLIC_URL.fullmatch(url) or _UNSAFE_IN_URL.search(url)):
            raise ValueError("expected an http(s) URL of printable ASCII, no query or fragment")
        return url.rstrip("/")

    @property
    def base_url(self) -> str:
        """``public_url``, or the address the API listens on (an IPv6 host in brackets)."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class LoggingSettings(_Strict):
    # Mask recipients, API keys and secret settings in every log line.
    redact: bool = True
    # "text" for a terminal, "json" (one object per line) for a log pipeline;
    # `--log-format` on hub up, api, worker and beat sets it.
    format: Literal["text", "json"] = "text"


class TemplateSettings(_Strict):
    """How rendered emails are finished (hub.email_html)."""

    # Query parameters added to every http(s) link of an email, e.g.
    # {source = "hub", medium = "email"} (the utm_ prefix is added); empty: none.
    utm: dict[str, str] = Field(default_factory=dict)


class OutboundSettings(_Strict):
    """Where the hub may send: the webhook, Slack and Apprise targets of settings."""

    # Private, loopback and link-local targets are allowed by default so a
    # laptop, the tests and Mailpit work; a production hub turns this off, so
    # a target can never reach the hub's own network (checked at start-up
    # and again at each send, after DNS).
    allow_private_targets: bool = True


class DeliverySettings(_Strict):
    """Retry policy shared by every channel."""

    # An upper bound inside each channel's retry_window, whichever ends first.
    max_attempts: int = Field(25, ge=1)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    # One provider call may take this long before it is cut.
    attempt_timeout_s: float = Field(30.0, gt=0)
    # The sweeper re-enqueues work the broker lost (a publish that failed, a
    # Redis that lost its data): anything still queued after stuck_after_s.
    sweep_interval_s: float = Field(30.0, gt=0)
    stuck_after_s: float = Field(120.0, gt=0)
    # A provider's Retry-After is honoured up to this: a broken or hostile
    # value must not park a message, or pause a channel, for years.
    max_retry_after_s: float = Field(3600.0, gt=0, le=86_400)
    # A worker holds what it claimed under a lease it renews while it works;
    # the sweeper hands a notification to another worker only once it expires.
    lease_s: float = Field(60.0, ge=1)
    # A rendered message (subject, text and HTML together) larger than this
    # fails as limit_exceeded instead of reaching the provider.
    max_message_bytes: int = Field(1024 * 1024, ge=1024)
    # An event whose routing fails this many times is quarantined: kept with
    # its error for a person to look at, and no longer swept.
    max_routing_attempts: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _sweeper_waits_for_running_attempts(self) -> DeliverySettings:
        # Otherwise the sweeper would hand a send still in progress to another
        # worker, and the message would go out twice.
        if self.stuck_after_s <= self.attempt_timeout_s + 1:
            raise ValueError(
                f"stuck_after_s ({self.stuck_after_s:g}) must exceed attempt_timeout_s "
                f"({self.attempt_timeout_s:g}) by more than a second"
            )
        return self


class CircuitSettings(_Strict):
    """When a provider counts as down, and how long its notifications then wait."""

    # Failures in a row (no connection, 5xx, 429) that open the circuit.
    failures: int = Field(5, ge=1)
    # How long an open circuit holds notifications before one probe is let through.
    open_for: str = "30s"

    @field_validator("open_for")
    @classmethod
    def _valid_open_for(cls, value: str) -> str:
        parse_duration(value, "open_for")
        return value

    @property
    def open_for_s(self) -> float:
        return parse_duration(self.open_for, "open_for")


class ChannelSettings(_Strict):
    """What every channel can be told; each channel's module adds its provider's keys.

    A section's flat keys describe its one provider, ``default``. A section
    may instead list several under ``[[channels.<name>.providers]]``, each
    with a ``name``; they inherit the keys set on the section itself. A
    listed provider with ``via = "<channel>"`` is of that other channel's
    kind (an SMS section's Twilio, then an Apprise SMS gateway): it takes that
    channel's keys and inherits only the section's delivery keys.
    """

    # When a provider may or may not have sent a message (a timeout after the
    # request went out, Twilio 20500): "hold" marks it unknown for a person to
    # review; "retry" sends again and risks a duplicate.
    on_unknown: Literal["hold", "retry"] = "hold"
    # Shared by every worker (kept in Redis): "10/s", "50/m", "1/5s"; empty: none.
    rate_limit: RateText = ""
    burst: int = Field(1, ge=1)
    # Overrides delivery.max_attempts for this channel.
    max_attempts: int | None = Field(None, ge=1)
    # How long after it was queued a notification is still retried: "1h", "24h".
    retry_window: str = "1h"
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    name: str = Field("default", min_length=1)
    via: str = ""
    providers: list[Any] = Field(default_factory=list)

    @field_validator("retry_window")
    @classmethod
    def _valid_window(cls, value: str) -> str:
        parse_duration(value, "retry_window")
        return value

    @property
    def retry_window_s(self) -> float:
        return parse_duration(self.retry_window, "retry_window")

    @model_validator(mode="before")
    @classmethod
    def _providers_inherit_section_keys(cls, data: Any) -> Any:
        # Each listed provider takes the keys set on its section that it does not set itself.
        listed = data.get("providers") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            return data
        shared = {key: value for key, value in data.items() if key != "providers"}
        # A provider of another kind shares only the keys every channel has.
        common = {key: value for key, value in shared.items() if key in _DELIVERY_KEYS}
        inherited = [
            {**(common if entry.get("via") else shared), **entry}
            if isinstance(entry, dict)
            else entry
            for entry in listed
        ]
        return {**data, "providers": inherited}

    @model_validator(mode="after")
    def _distinct_provider_names(self) -> ChannelSettings:
        names = [provider.name for provider in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be distinct, got {names}")
        return self

    @property
    def all_providers(self) -> list[ChannelSettings]:
        """The listed providers, or this section as the one provider ``default``."""
        return list(self.providers) or [self]

    def provider(self, name: str) -> ChannelSettings | None:
        """The provider called ``name``, if there is one."""
        return next((p for p in self.all_providers if p.name == name), None)


# What a provider of another kind inherits from its section: how notifications
# are delivered, never how a provider is reached.
_DELIVERY_KEYS = frozenset({"on_unknown", "max_attempts", "retry_window", "circuit"})


def section_model(
    name: str, model: type[ChannelSettings], kinds: Mapping[str, type[ChannelSettings]]
) -> type[ChannelSettings]:
    """Channel ``name``'s section: ``model`` itself, or a list of providers.

    A provider is of the channel's own kind, or with ``via`` of any kind in
    ``kinds`` (channel name to settings model).
    """

    def kind(entry: Any) -> str:
        via = entry.get("via", "") if isinstance(entry, dict) else getattr(entry, "via", "")
        return "" if via == name else str(via)

    tagged = [Annotated[model, Tag("")]]
    tagged += [Annotated[other, Tag(via)] for via, other in kinds.items() if via != name]
    known = ", ".join(via for via in kinds if via != name)
    unknown = f"via names no channel that can send for {name}; known: {known}"
    pick = Discriminator(kind, custom_error_type="unknown_via", custom_error_message=unknown)
    provider = Annotated[Union[tuple(tagged)], pick]  # type: ignore[valid-type]  # noqa: UP007
    section: type[ChannelSettings] = create_model(
        model.__name__,
        __base__=model,
        providers=(list[provider], Field(default_factory=list)),  # type: ignore[valid-type]
    )
    return section


class ChannelsSettings(_Strict):
    """One section per registered channel (fields added by :func:`settings_class`)."""

    # Every channel by name; set on the class settings_class builds.
    channel_classes: ClassVar[dict[str, type[Channel[Any]]]] = {}

    def of(self, channel: str) -> ChannelSettings:
        """The settings of ``channel`` by name."""
        settings: ChannelSettings = getattr(self, channel)
        return settings

    def kind_of(self, channel: str, provider: ChannelSettings) -> type[Channel[Any]]:
        """The channel class that sends through ``provider`` of ``channel``."""
        return self.channel_classes[provider.via or channel]

    @model_validator(mode="after")
    def _via_only_on_providers(self) -> ChannelsSettings:
        for name in self.channel_classes:
            if self.of(name).via:
                raise ValueError(
                    f"channels.{name}.via: only a listed provider "
                    f"([[channels.{name}.providers]]) may send via another channel"
                )
        return self

    @property
    def alert_targets(self) -> list[str]:
        """The configured alert channels; Slack's outbox when none is configured."""
        configured = [
            name
            for name, channel in self.channel_classes.items()
            if channel.alert and channel.is_configured(self.of(name))
        ]
        return configured or ["slack"]

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


class BundledSettings(_Strict):
    """Which kinds of the hub's bundled entries a user's settings file keeps (all by default)."""

    events: bool = True
    subscriptions: bool = True
    templates: bool = True


class EventType(_Strict):
    """One entry of the event catalog: what the event means and its data's JSON schema."""

    description: str = ""
    data_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    # Sample data: what `hub check` renders each template with.
    example: dict[str, Any] | None = None
    # Keep counts on each event of this type and publish `event.completed` once
    # all its notifications are final; off, routing and delivery pay nothing.
    completion: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# How urgent a subscription's notifications are, most urgent first.
Priority = Literal["critical", "high", "normal", "low"]
# A duration as new fields take it: "10m", or seconds; strict, so true is not 1s.
Duration = str | StrictInt | StrictFloat


class SchedulingSettings(_Strict):
    """How notifications held for later (delay, deliver_at, quiet hours, digests) are released."""

    # Beat releases held notifications whose time came this often.
    release_interval: Duration = "5s"
    # Waits up to this long also go to the broker as countdowns, on time to the
    # second; longer ones wait in the store only, for beat: Redis redelivers an
    # unacknowledged countdown after its visibility timeout, which would
    # duplicate long waits. 0: every wait is the store's.
    countdown_max: Duration = "5m"

    @field_validator("release_interval")
    @classmethod
    def _valid_interval(cls, value: Duration) -> Duration:
        parse_duration(value, "release_interval")
        return value

    @field_validator("countdown_max")
    @classmethod
    def _valid_countdown(cls, value: Duration) -> Duration:
        if parse_duration(value, "countdown_max", positive=False) > 3600:
            raise ValueError("countdown_max: at most 1h, the broker's visibility timeout")
        return value

    @property
    def release_interval_s(self) -> float:
        return parse_duration(self.release_interval, "release_interval")

    @property
    def countdown_max_s(self) -> float:
        return parse_duration(self.countdown_max, "countdown_max", positive=False)


class WorkerSettings(_Strict):
    """What each worker reports about itself: its heartbeat and its own ``/metrics``."""

    # Port of the worker's own Prometheus endpoint (its main process serves the
    # metrics of all its pool processes); 0: none, as on one machine the API's
    # /metrics covers its workers. Workers sharing a host need a port each.
    metrics_port: int = Field(0, ge=0, le=65535)
    # How often the worker writes its heartbeat (/readyz and `hub status`
    # count a worker alive for 30 s after its last one).
    heartbeat: Duration = "5s"
    # Prometheus metrics in the API and the workers; off saves their small cost.
    metrics: bool = True

    @field_validator("heartbeat")
    @classmethod
    def _valid_heartbeat(cls, value: Duration) -> Duration:
        if parse_duration(value, "heartbeat") > 10:
            raise ValueError("heartbeat: at most 10s, so a live worker is never seen as stale")
        return value

    @property
    def heartbeat_s(self) -> float:
        return parse_duration(self.heartbeat, "heartbeat")


class AlertsSettings(_Strict):
    """How often alert groups are checked for notifications, escalations and resolves."""

    # Beat runs the check this often; escalation delays are as precise as it.
    tick_s: float = Field(1.0, gt=0, le=60)


# The states a status webhook can report: the outcomes delivery records and
# the ones providers report (sent, then delivered or undelivered).
WebhookStatus = Literal["sent", "delivered", "undelivered", "failed", "unknown", "expired"]


def _default_statuses() -> list[WebhookStatus]:
    return ["sent", "delivered", "failed"]


class StatusWebhookSettings(_Strict):
    """One receiver of the hub's status changes (hub.status_webhooks)."""

    url: str
    # Signs each POST (X-Hub-Signature, as the webhook channel): empty, unsigned.
    secret: SecretStr = SecretStr("")
    statuses: list[WebhookStatus] = Field(default_factory=_default_statuses, min_length=1)
    timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url


class RetentionSettings(_Strict):
    """How long finished rows are kept; beat deletes older ones (hub.store.retention)."""

    # Events whose notifications are all final, with those notifications.
    events: Duration = "30d"
    # Delivery attempts of final notifications (the attempt log).
    attempts: Duration = "7d"
    # How often beat runs the purge, and the rows it deletes per transaction.
    interval: Duration = "1h"
    batch: int = Field(1000, ge=1, le=100_000)

    @field_validator("events", "attempts", "interval")
    @classmethod
    def _valid_duration(cls, value: Duration, info: ValidationInfo) -> Duration:
        parse_duration(value, str(info.field_name))
        return value

    @property
    def events_s(self) -> float:
        return parse_duration(self.events, "events")

    @property
    def attempts_s(self) -> float:
        return parse_duration(self.attempts, "attempts")

    @property
    def interval_s(self) -> float:
        return parse_duration(self.interval, "interval")


class BeatSettings(_Strict):
    """One beat per deployment (hub.beat_lock)."""

    # A standby beat takes over this long after the lock's holder died at the
    # latest; the holder renews it every third of it.
    lock_ttl: Duration = "30s"

    @field_validator("lock_ttl")
    @classmethod
    def _valid_ttl(cls, value: Duration) -> Duration:
        if parse_duration(value, "lock_ttl") < 1:
            raise ValueError("lock_ttl: at least 1s")
        return value

    @property
    def lock_ttl_s(self) -> float:
        return parse_duration(self.lock_ttl, "lock_ttl")


class EscalationStep(_Strict):
    """One step of a failure alert's escalation: after how long, on which channel, to whom."""

    after: Duration
    channel: str = Field(min_length=1)
    to: str = ""

    @field_validator("after")
    @classmethod
    def _valid_after(cls, value: Duration) -> Duration:
        parse_duration(value, "after", positive=False)
        return value


class Subscription(_Strict):
    """Who hears about an event, on which channel, with which template."""

    name: str = Field(min_length=1, max_length=200)
    # False in a user's file drops the bundled subscription of the same name.
    enabled: bool = True
    event: str = Field(description="An event type, or a glob of them such as task.*")
    channel: str = Field(description="A registered channel, or alert for every alert channel")
    # Empty: the recipients an event names (a later step); until then such a
    # subscription sends nothing.
    to: str = Field("", description="Jinja expression giving the recipient, e.g. {{ data.email }}")
    template: str
    when: str = Field("", description="Optional Jinja condition, e.g. data.phone is defined")
    # A JSON condition on the event (hub.filters), checked when settings load.
    filter: dict[str, Any] | None = Field(
        None, description='e.g. {"data.severity": {"in": ["error", "critical"]}}'
    )
    # Not worth sending after this long ("10m" for a verification code): the
    # notification is then expired instead. Empty: it never expires.
    ttl: str = ""
    category: str | None = Field(None, min_length=1, max_length=200)
    priority: Priority = "normal"
    # Held this long after routing ("10m"), as `scheduled` (hub.scheduling).
    delay: Duration | None = None
    # A recipient's matching events within this window ("1h", opened by the
    # first) become one notification, rendered with them all when it closes.
    digest: Duration | None = None
    # Failure alerts (hub.alerts): with group_by, matching events become
    # alert groups by those labels instead of one notification each. The
    # first notification waits group_wait, gathering what arrives meanwhile;
    # news in an open group goes out at most once per group_interval; an
    # unresolved group is sent again after repeat_interval.
    group_by: list[str] = Field(default_factory=list)
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    # Pages after the first notification, each at its `after`, until an ack or a resolve.
    escalation: list[EscalationStep] = Field(default_factory=list)
    # The event type (or glob) whose events resolve this subscription's groups
    # (task.succeeded for task.failed), and how long quiet resolves one.
    resolve_on: str = ""
    resolve_after: Duration | None = None

    @field_validator("ttl")
    @classmethod
    def _valid_ttl(cls, value: str) -> str:
        if value:
            parse_duration(value, "ttl")
        return value

    @field_validator(
        "delay", "digest", "group_wait", "group_interval", "repeat_interval", "resolve_after"
    )
    @classmethod
    def _valid_durations(cls, value: Duration | None, info: ValidationInfo) -> Duration | None:
        if value is not None:
            parse_duration(value, info.field_name or "duration")
        return value

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Imported here: settings sit below every other hub module (the filter
        # language imports nothing of the hub, but settings must not load it).
        from hub.filters import FilterError, parse_filter

        if value is not None:
            try:
                parse_filter(value)
            except FilterError as exc:
                # Its own type, so a client tells a bad filter from other input.
                error = {"error": str(exc)}
                raise PydanticCustomError("invalid_filter", "{error}", error) from None
        return value

    @field_validator("group_by")
    @classmethod
    def _valid_group_by(cls, paths: list[str]) -> list[str]:
        from hub.filters import parse_path

        for index, path in enumerate(paths):
            try:
                parse_path(path)
            except ValueError as exc:
                raise ValueError(f"group_by[{index}]: {exc}") from None
        return paths

    @property
    def ttl_s(self) -> float | None:
        return parse_duration(self.ttl, "ttl") if self.ttl else None

    @property
    def grouped(self) -> bool:
        """Whether its events become alert groups (hub.alerts) rather than notifications."""
        return bool(self.group_by)

    def seconds(self, field: str, default: float) -> float:
        """A duration field in seconds, or ``default`` when it is unset."""
        value = getattr(self, field)
        return default if value is None else parse_duration(value, field, positive=False)

    @property
    def delay_s(self) -> float:
        return parse_duration(self.delay, "delay") if self.delay is not None else 0.0

    @property
    def digest_s(self) -> float | None:
        return parse_duration(self.digest, "digest") if self.digest is not None else None
