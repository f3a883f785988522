"""Runs the gateway under uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.http.app import create_app
from samo.settings import GatewaySettings


def run_gateway(settings: GatewaySettings) -> None:
    # No access log: request lines are noise at load, and the metrics endpoint counts requests.
    uvicorn.run(
        create_app(settings=settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
    )
