"""The HTTP API: thin handlers over :mod:`hub.events`, the store and the channels.

One module per resource; :func:`create_app` assembles them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hub import __version__, events
from hub.api.auth import authentication
from hub.api.callback_routes import add_callback_routes
from hub.api.channel_routes import add_channel_routes
from hub.api.event_routes import add_event_routes
from hub.api.notification_routes import add_notification_routes
from hub.api.template_routes import add_template_routes
from hub.circuit import circuit_breakers
from hub.errors import BrokerUnavailable, EventError, InvalidFilter
from hub.settings import get_settings
from hub.worker import get_app


def create_app() -> FastAPI:
    """The API application; settings and the event catalog are checked here, at start-up."""
    settings = get_settings()
    events.catalog()
    get_app()  # fails here, at start-up, without a broker

    # FastAPI's telemetry looks up the OpenTelemetry providers on every
    # request, a sixth of a publish's time, unless it is switched off here.
    telemetry = settings.api.opentelemetry
    app = FastAPI(
        title="hub",
        version=__version__,
        telemetry={"tracing": telemetry, "metrics": telemetry, "logs": telemetry},
    )
    app.exception_handler(EventError)(_invalid_event)
    app.exception_handler(BrokerUnavailable)(_broker_down)
    app.exception_handler(InvalidFilter)(_invalid_filter)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    authenticated = authentication(settings.resolved_database_url)
    add_event_routes(app, settings.resolved_database_url, authenticated)
    add_notification_routes(app, settings, authenticated)
    add_callback_routes(app, settings)
    add_template_routes(app, settings, authenticated)
    breakers = circuit_breakers(settings.rate_limit_redis_url)
    add_channel_routes(app, settings, breakers, authenticated)
    return app


async def _invalid_event(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventError)
    detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
    return JSONResponse({"detail": detail}, status_code=422)


async def _invalid_filter(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _broker_down(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{exc}; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


