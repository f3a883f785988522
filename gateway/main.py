"""Runs the gateway under uvicorn, in one process or in several that share the ports."""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI

from gateway.http.app import create_app
from samo.settings import GatewaySettings

ENV_PREFIX = "SAMO_"


def create_app_from_environment() -> FastAPI:
    """The app factory each worker process calls: its settings come from `SAMO_*` variables."""
    return create_app(settings=GatewaySettings())


def run_gateway(settings: GatewaySettings) -> None:
    # No access log: request lines are noise at load, and the metrics endpoint counts requests.
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "info",
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings=settings), **common)
        return
    # uvicorn binds the HTTP socket once and its workers share it; each worker starts its own gRPC
    # server on the same port (gRPC sets SO_REUSEPORT on Linux, so the kernel spreads connections).
    # Workers are new interpreters: they read this process's settings back from the environment.
    os.environ.update(
        {
            f"{ENV_PREFIX}{name.upper()}": str(value)
            for name, value in settings.model_dump().items()
            if value is not None
        }
    )
    uvicorn.run("gateway.main:create_app_from_environment", factory=True, workers=settings.workers, **common)
