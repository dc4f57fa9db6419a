"""``/healthz``, ``/readyz`` and ``/metrics``: for probes and scrapers, so they take no key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from hub import __version__, health, metrics
from hub.settings import Settings


def add_health_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up (it checks nothing else: that is /readyz)."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 when the database, its schema, the broker and a worker are all there; else 503."""
        readiness = await run_in_threadpool(health.readiness, settings)
        return JSONResponse(readiness.as_json(), status_code=200 if readiness.ok else 503)

    if settings.api.metrics_bind is not None:
        return  # `hub api` serves /metrics on api.metrics_address instead

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text: the API and every worker on this machine, and the queues now."""
        body = await run_in_threadpool(metrics.render, settings, metrics.machine_folders(settings))
        return Response(body, media_type=metrics.CONTENT_TYPE)
