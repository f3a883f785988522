"""The FastAPI app factory: lifespan opens the Triton client; routes stay thin."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

import samo
from gateway.http.emotions import emotion_router
from gateway.http.errors import install_error_handlers
from gateway.services import Services
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


def _metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    requests = Counter(
        "samo_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=registry
    )
    latency = Histogram(
        "samo_http_request_seconds",
        "HTTP request latency by route.",
        ["route"],
        buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        registry=registry,
    )

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests.labels(path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(*, settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services.open(settings)
        try:
            yield
        finally:
            await app.state.services.close()

    app = FastAPI(
        title="SAMO serving",
        version=samo.__version__,
        description="Emotions for journal entries, served by NVIDIA Triton.",
        lifespan=lifespan,
    )
    install_error_handlers(app, settings)
    _metrics(app, CollectorRegistry())
    app.include_router(emotion_router(settings))

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
