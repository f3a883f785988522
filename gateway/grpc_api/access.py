"""Access for gRPC: a server interceptor with the same keys, limits and errors as HTTP.

Health stays open for probes. Reflection is protected like samo.v1 (grpcurl sends its `-H` headers
with reflection requests too), so an unauthenticated caller learns nothing about the API.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gateway.errors import GRPC_ERROR_TYPE_KEY, GRPC_RETRY_AFTER_KEY, GRPC_STATUS, SamoError
from gateway.grpc_api.calls import Callers
from gateway.grpc_api.handlers import Behavior, RewrapOnce
from gateway.security.access import Access, Principal

OPEN_PREFIX = "/grpc.health.v1.Health/"
# gRPC's own server pushback: clients with a retry policy wait this long before retrying.
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.7:51234` -> `10.0.0.7`, `ipv6:[::1]:51234` -> `::1`; other forms as they are."""
    kind, _, address = peer.partition(":")
    if kind == "ipv4":
        return address.rpartition(":")[0]
    if kind == "ipv6":
        return address.rpartition(":")[0].strip("[]")
    return peer


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method handler so that the check runs in the call's own task, with its context:
    refusals go out through `context.abort`, and the caller is kept in `callers` for the servicer."""

    def __init__(self, access: Access, callers: Callers) -> None:
        self.access = access
        self.callers = callers
        self._rewrap = RewrapOnce(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIX):
            return handler
        return self._rewrap(handler)

    async def _admit_call(self, context: grpc.aio.ServicerContext) -> Principal:
        """The call's keys from its own metadata."""
        metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if key in ("authorization", "x-api-key") and isinstance(value, str)
        }
        return await self._admit(metadata.get("authorization"), metadata.get("x-api-key"), context)

    async def _admit(
        self, authorization: str | None, api_key: str | None, context: grpc.aio.ServicerContext
    ) -> Principal:
        try:
            return await self.access.admit(authorization, api_key, peer_host(context.peer()))
        except SamoError as error:
            trailing = [(GRPC_ERROR_TYPE_KEY, error.type.value)]
            if error.retry_after_s is not None:
                trailing += [
                    (GRPC_RETRY_AFTER_KEY, str(error.retry_after_s)),
                    (PUSHBACK_KEY, str(error.retry_after_s * 1000)),
                ]
            context.set_trailing_metadata(tuple(trailing))
            await context.abort(grpc.StatusCode[GRPC_STATUS[error.type]], error.message)
            raise  # unreachable: abort raises

    def _wrap(self, behavior: Behavior, kind: str) -> Behavior:
        """The same behavior, run once the caller is admitted (with the caller kept for the servicer)."""
        granted = self.callers.calling
        admit = self._admit_call

        if kind.endswith("unary"):

            async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
                principal = await admit(context)
                with granted(context, principal):
                    return await behavior(request, context)

            return admitted

        async def admitted_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = await admit(context)
            with granted(context, principal):
                responses = behavior(request, context)
                if inspect.isasyncgen(responses):
                    async for response in responses:
                        yield response
                else:  # a handler that writes with `context.write` and returns nothing
                    await responses

        return admitted_stream
