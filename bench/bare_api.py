"""The floor for the publish rate: a FastAPI app whose ``POST /v1/events`` only answers 202.

Served like ``hub api`` serves the hub (one uvicorn process, no access log, FastAPI's
telemetry off, an ``async`` handler)::

    python -m bench.bare_api --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, status


def create_app() -> FastAPI:
    app = FastAPI(title="bare", telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/events", status_code=status.HTTP_202_ACCEPTED)
    async def publish() -> dict[str, str]:
        return {"status": "accepted"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        "bench.bare_api:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
