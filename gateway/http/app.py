"""The FastAPI app factory: lifespan opens the Triton client; routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

import samo
from gateway.batches import BatchService
from gateway.database import Database
from gateway.grpc_api.server import start_grpc_server
from gateway.health.monitor import ModelsHealth
from gateway.http.access import AccessMiddleware
from gateway.http.batches import batch_router
from gateway.http.body_limit import install_body_limits
from gateway.http.demo import demo_router
from gateway.http.emotions import DirectEmotions, emotion_router
from gateway.http.errors import install_error_handlers
from gateway.http.journal import journal_router
from gateway.http.observability import ObservedRequests
from gateway.http.realtime import realtime_router
from gateway.http.summarization import summarization_router
from gateway.http.tenancy import tenancy_router
from gateway.http.transcription import transcription_router
from gateway.observability.metrics import CONTENT_TYPE, gateway_registry, mark_worker_exit, render_metrics
from gateway.observability.tracing import start_tracing, stop_tracing
from gateway.operations import Operations
from gateway.operations.metering import Meter
from gateway.operations.tenancy import Tenancy
from gateway.security import Access
from gateway.security.managed_keys import ManagedKeys
from gateway.services import Services
from gateway.shutdown import on_shutdown_signal
from gateway.usage import UsageLedger
from gateway.usage.metrics import TenantMetrics
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


def create_app(*, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway: HTTP routes here, and the gRPC server (samo.v1) started by the lifespan, both over
    the same operations (gateway/operations)."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing = start_tracing(settings.otlp_endpoint)
        services = Services.open(settings)
        operations = Operations(services, meter)
        app.state.services = services
        app.state.operations = operations
        app.state.tenancy = Tenancy(managed, ledger)
        app.state.access = access
        batches = BatchService(settings, operations, database, access, registry)
        app.state.batches = batches
        services.health.start()
        await access.start()
        if ledger is not None:
            await ledger.start()
        await batches.start()
        grpc_server = await start_grpc_server(operations, settings, access=access)
        app.state.grpc_port = grpc_server.port

        def drain() -> None:
            logger.info("shutting down: %.0f s for requests in progress", settings.shutdown_grace_s)
            operations.begin_drain()
            grpc_server.begin_shutdown(settings.shutdown_grace_s)

        remove_shutdown_hook = on_shutdown_signal(drain)
        try:
            yield
        finally:
            remove_shutdown_hook()
            await grpc_server.stop(settings.shutdown_grace_s)
            await batches.close()
            await access.stop()
            if ledger is not None:
                await ledger.stop()
            if database is not None:
                database.close()
            await services.close()
            stop_tracing(tracing)
            mark_worker_exit()

    app = FastAPI(
        title="SAMO serving",
        version=samo.__version__,
        description="Emotions, transcripts and summaries for journal entries, served by NVIDIA Triton.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry asks the global providers, through os.environ, on every request
        # (3 % of the gateway's samples at c=256); the gateway has its own spans and metrics
        # (gateway/observability), so it stays off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app, settings)
    emotions = emotion_router(settings)
    # Innermost: inside the body limit and access, so both apply to requests it serves.
    app.add_middleware(DirectEmotions, settings=settings, route=emotions.routes[0])
    install_body_limits(app, settings)  # before the access middleware: innermost, so 413s are counted
    registry = gateway_registry()
    database = Database.open(settings.database_url.get_secret_value()) if settings.database_url else None
    managed = ManagedKeys(database, settings.managed_keys_refresh_s) if database is not None else None
    ledger = UsageLedger(database, registry=registry) if database is not None else None
    meter = Meter(TenantMetrics(registry, settings.metrics_max_tenants), ledger)
    access = Access.from_settings(settings, registry, managed)
    # Outermost last: CORS answers preflights and labels refusals; metrics count 401/429 too.
    app.add_middleware(AccessMiddleware, access=access, settings=settings)
    app.add_middleware(ObservedRequests)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type", "x-request-id"],
            expose_headers=["retry-after", "x-request-id"],
        )
    app.include_router(emotions)
    app.include_router(transcription_router(settings))
    app.include_router(summarization_router(settings))
    app.include_router(journal_router(settings))
    app.include_router(tenancy_router())
    app.include_router(batch_router())
    app.include_router(realtime_router(settings))
    if settings.realtime_demo:
        app.include_router(demo_router())

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(render_metrics(registry), media_type=CONTENT_TYPE)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "Not ready, with the reason"}})
    async def ready(request: Request) -> JSONResponse:
        """Ready while every installed model answers its probe (a real inference through Triton), and
        until shutdown begins; the reason names the models that do not."""
        reason = await request.app.state.operations.readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        headers = {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503, headers=headers)

    @app.get(
        "/health/models",
        tags=["health"],
        response_model=ModelsHealth,
        responses={503: {"model": ModelsHealth, "description": "Some model is not serving"}},
    )
    async def models_health(request: Request) -> JSONResponse:
        """Every model Triton serves for the gateway: serving, slow (ready, but its probe timed out or met
        a full queue), failing (with why) or reloading."""
        services = request.app.state.services
        await services.health.ensure_checked()
        report = services.health.report()
        return JSONResponse(report.model_dump(mode="json"), status_code=200 if report.ready else 503)

    return app
