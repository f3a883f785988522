"""The gRPC server inside the gateway process: samo.v1, grpc.health.v1 and server reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import (
    aio as health_aio,  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lack its asyncio servicer
)
from grpc_reflection.v1alpha import reflection

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.grpc_api.access import AccessInterceptor
from gateway.grpc_api.calls import Callers
from gateway.grpc_api.malformed import MalformedMessages
from gateway.grpc_api.observability import ObservedCalls
from gateway.grpc_api.servicer import SamoServicer
from gateway.operations import Operations
from gateway.security import Access
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

SERVICE_NAME = samo_v1_pb2.DESCRIPTOR.services_by_name["Samo"].full_name


def model_health_service(model: str) -> str:
    """The grpc.health.v1 service name that reports one Triton model, e.g. `samo.v1.Samo/emotion`."""
    return f"{SERVICE_NAME}/{model}"


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    health_task: asyncio.Task[None]
    _stopping: asyncio.Future[None] | None = None

    def begin_shutdown(self, grace_s: float) -> None:
        """Report NOT_SERVING and refuse new calls now; calls in progress get `grace_s` to finish."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))

    async def stop(self, grace_s: float) -> None:
        self.begin_shutdown(grace_s)
        assert self._stopping is not None
        await self._stopping

    async def _stop(self, grace_s: float) -> None:
        self.health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def _serving(ok: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING


async def _follow_health(operations: Operations, health: health_aio.HealthServicer) -> None:
    """grpc.health.v1 follows the model health monitor: `` and `samo.v1.Samo` are SERVING while every
    model serves (as GET /health/ready), `samo.v1.Samo/<model>` while that model does."""
    last_reason: str | None = ""
    seen = -1
    while True:
        reason = await operations.readiness()
        services = operations.services
        if reason != last_reason:
            logger.info("grpc health: %s", "SERVING" if reason is None else f"NOT_SERVING ({reason})")
            last_reason = reason
        for service in ("", SERVICE_NAME):
            await health.set(service, _serving(reason is None))
        for state in services.health.report().models:
            await health.set(model_health_service(state.model), _serving(state.serves))
        seen = await services.health.wait_for_change(seen)


def _bind(server: grpc.aio.Server, settings: GatewaySettings) -> int:
    """The gRPC port, with TLS when the settings give a certificate (as HTTP has)."""
    address = f"{settings.host}:{settings.grpc_port}"
    if settings.tls_cert is None or settings.tls_key is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
    )
    return server.add_secure_port(address, credentials)


async def start_grpc_server(
    operations: Operations, settings: GatewaySettings, access: Access | None = None
) -> GrpcServer:
    """`access`: API keys and rate limits for every method but health (none: open)."""
    callers = Callers()
    server = grpc.aio.server(
        # Observed first (outermost): refused calls get their request ID and are counted too.
        # Malformed last (innermost): it replaces each method's deserializer.
        interceptors=[
            ObservedCalls(),
            *([AccessInterceptor(access, callers)] if access is not None else []),
            MalformedMessages(),
        ],
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_send_message_bytes),
        ],
        # Calls past this are refused (RESOURCE_EXHAUSTED) before their messages are read.
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
    )
    samo_v1_pb2_grpc.add_SamoServicer_to_server(SamoServicer(operations, settings, callers, access), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    port = _bind(server, settings)
    await server.start()
    tls = " with TLS" if settings.tls_cert else ""
    logger.info("gRPC on %s:%d%s (%s, health, reflection)", settings.host, port, tls, SERVICE_NAME)
    # Known from the start (NOT_SERVING until the first probes answer), rather than NOT_FOUND.
    for service in ("", SERVICE_NAME, *map(model_health_service, operations.services.health.probes)):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    task = asyncio.create_task(_follow_health(operations, health))
    return GrpcServer(server, port, health, task)
