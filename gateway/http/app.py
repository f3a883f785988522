"""The FastAPI app factory: lifespan opens the Triton client; routes stay thin."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import samo
from gateway.grpc_api.server import start_grpc_server
from gateway.http.emotions import emotion_router
from gateway.http.errors import install_error_handlers
from gateway.http.journal import journal_router
from gateway.http.summarization import summarization_router
from gateway.http.transcription import transcription_router
from gateway.services import Services
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


class _RequestMetrics:
    """Pure ASGI middleware: counts and times requests by route template (never by raw path or body).

    Starlette's BaseHTTPMiddleware costs about a millisecond per request; this costs microseconds.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "samo_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=registry
        )
        self.latency = Histogram(
            "samo_http_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)


def create_app(*, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway: HTTP routes here, and the gRPC server (samo.v1) started by the lifespan, both over
    the same services."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.open(settings)
        app.state.services = services
        grpc_server = await start_grpc_server(services, settings)
        app.state.grpc_port = grpc_server.port
        try:
            yield
        finally:
            await grpc_server.stop()
            await services.close()

    app = FastAPI(
        title="SAMO serving",
        version=samo.__version__,
        description="Emotions, transcripts and summaries for journal entries, served by NVIDIA Triton.",
        lifespan=lifespan,
    )
    install_error_handlers(app, settings)
    registry = CollectorRegistry()
    app.add_middleware(_RequestMetrics, registry=registry)
    app.include_router(emotion_router(settings))
    app.include_router(transcription_router(settings))
    app.include_router(summarization_router(settings))
    app.include_router(journal_router(settings))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "Not ready, with the reason"}})
    async def ready(request: Request) -> JSONResponse:
        """Ready only when a real inference through Triton succeeds."""
        reason = await request.app.state.services.readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        headers = {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503, headers=headers)

    return app
