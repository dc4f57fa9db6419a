"""The HTTP API: thin handlers over :mod:`hub.events`, the store and the channels.

One module per resource; :func:`create_app` assembles them.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from hub import __version__, events, logs, metrics
from hub.api.alert_routes import add_alert_routes
from hub.api.auth import Access
from hub.api.callback_routes import add_callback_routes
from hub.api.cancel_routes import add_cancel_routes
from hub.api.channel_routes import add_channel_routes
from hub.api.event_routes import add_event_routes
from hub.api.follow import FollowReloads, started
from hub.api.health_routes import add_health_routes
from hub.api.limits import RequestLimits
from hub.api.notification_routes import add_notification_routes
from hub.api.recipient_routes import add_recipient_routes
from hub.api.stats_routes import add_stats_routes
from hub.api.subscription_routes import add_subscription_routes
from hub.api.template_routes import add_template_routes
from hub.api.unsubscribe_routes import add_unsubscribe_routes
from hub.circuit import circuit_breakers
from hub.errors import BrokerUnavailable, EventError, InvalidFilter
from hub.settings import get_settings
from hub.templates import sync_files
from hub.ui.routes import add_ui_routes
from hub.worker import get_app


def create_app() -> FastAPI:
    """The API application; settings and the event catalog are checked here, at start-up."""
    watch = started(get_settings().resolved_database_url)
    settings = get_settings()
    logs.configure(settings.logging.redact, settings)
    events.catalog()
    sync_files(settings.resolved_database_url, settings.all_template_dirs)
    get_app()  # fails here, at start-up, without a broker

    # FastAPI's telemetry looks up the OpenTelemetry providers on every
    # request, a sixth of a publish's time, unless it is switched off here.
    telemetry = settings.api.opentelemetry
    app = FastAPI(
        title="hub",
        version=__version__,
        telemetry={"tracing": telemetry, "metrics": telemetry, "logs": telemetry},
    )
    app.add_middleware(FollowReloads, watch=watch)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.api.max_body_bytes,
        max_batch_body_bytes=settings.api.max_batch_body_bytes,
    )
    app.exception_handler(EventError)(_invalid_event)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(BrokerUnavailable)(_broker_down)
    app.exception_handler(OperationalError)(_database_down)
    app.exception_handler(InvalidFilter)(_invalid_filter)

    # Before the other routes' set-up: probes answer whatever a later route needs.
    metrics.enable(settings, "api")
    add_health_routes(app, settings)
    # Callbacks, unsubscribe and ack links take no key: they are signed instead.
    access = Access.from_settings(settings)
    add_event_routes(app, settings.resolved_database_url, access)
    add_cancel_routes(app, settings.resolved_database_url, access)
    add_notification_routes(app, settings, access)
    add_callback_routes(app, settings)
    add_unsubscribe_routes(app, settings)
    add_template_routes(app, settings, access)
    add_recipient_routes(app, access)
    add_subscription_routes(app, settings, access)
    add_alert_routes(app, settings, access)
    breakers = circuit_breakers(settings.rate_limit_redis_url)
    add_channel_routes(app, settings, breakers, access)
    add_stats_routes(app, settings, access)
    add_ui_routes(app, settings, access)
    return app


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error may quote input holding a lone surrogate,
    which cannot be encoded as UTF-8 (the default response would fail with a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


async def _invalid_event(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventError)
    detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
    return AsciiJSONResponse({"detail": detail}, status_code=422)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    # A locked SQLite file or an unreachable PostgreSQL: nothing of this request was kept.
    return JSONResponse(
        {"detail": "the database is busy or unavailable; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _invalid_filter(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _broker_down(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{exc}; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
