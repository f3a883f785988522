"""The gRPC server inside the gateway process: samo.v1, grpc.health.v1 and server reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.grpc_api.servicer import SamoServicer
from gateway.services import Services
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

SERVICE_NAME = samo_v1_pb2.DESCRIPTOR.services_by_name["Samo"].full_name


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int
    health_task: asyncio.Task[None]

    async def stop(self, grace_s: float = 2.0) -> None:
        self.health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.health_task
        await self.server.stop(grace_s)


async def _follow_readiness(services: Services, health: health_aio.HealthServicer, interval_s: float) -> None:
    """SERVING only while a real inference through Triton succeeds, like GET /health/ready."""
    last = None
    while True:
        reason = await services.readiness()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if reason is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if status != last:
            logger.info(
                "grpc health: %s%s",
                health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                f" ({reason})" if reason else "",
            )
            last = status
        for service in ("", SERVICE_NAME):
            await health.set(service, status)
        await asyncio.sleep(interval_s)


async def start_grpc_server(services: Services, settings: GatewaySettings) -> GrpcServer:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.grpc_max_message_bytes)])
    samo_v1_pb2_grpc.add_SamoServicer_to_server(SamoServicer(services, settings), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    logger.info("gRPC on %s:%d (%s, health, reflection)", settings.host, port, SERVICE_NAME)
    task = asyncio.create_task(_follow_readiness(services, health, settings.grpc_health_interval_s))
    return GrpcServer(server, port, task)
