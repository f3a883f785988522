"""The gRPC side: a server interceptor gives each call its ID, span, metrics and log line, as the HTTP
middleware does for requests."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gateway.grpc_api.handlers import RewrapOnce
from gateway.observability.metrics import GRPC_LATENCY, GRPC_REQUESTS, INFLIGHT, labelled
from gateway.observability.request_id import METADATA_KEY, accept_request_id, bind_request_id
from gateway.observability.tracing import REQUEST_ID_ATTRIBUTE, begin_server_span, end_server_span

logger = logging.getLogger(__name__)


class _Call:
    """One call being observed, from its first line to its status."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.start = time.perf_counter()
        labelled(INFLIGHT, "grpc").inc()
        metadata = {
            key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
        }
        self.request_id = accept_request_id(metadata.get(METADATA_KEY))
        bind_request_id(self.request_id)
        self.span = begin_server_span(
            method,
            metadata,
            {"rpc.system": "grpc", "rpc.method": method, REQUEST_ID_ATTRIBUTE: self.request_id},
        )

    async def begin(self) -> None:
        await self.context.send_initial_metadata(((METADATA_KEY, self.request_id),))

    def finish(self, error: BaseException | None) -> None:
        labelled(INFLIGHT, "grpc").dec()
        code = _status_code(self.context, error)
        elapsed = time.perf_counter() - self.start
        labelled(GRPC_REQUESTS, self.method, code).inc()
        labelled(GRPC_LATENCY, self.method).observe(elapsed)
        failed = code in _SERVER_FAULTS
        end_server_span(self.span, failed=failed, attributes={"rpc.grpc.status_code": code})
        level = logging.WARNING if failed else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "%s -> %s in %.1f ms", self.method, code, elapsed * 1000)


# Status codes that say the server failed, not the caller (as 5xx does for HTTP).
_SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED"})


def _status_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return "UNKNOWN"  # what grpc answers for an exception the handler let out
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


def _unary_response(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, context)
        error = None
        try:
            await call.begin()
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.finish(error)

    return observed


def _streamed_response(
    method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, context)
        error = None
        try:
            await call.begin()
            async for message in behavior(request, context):
                yield message
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.finish(error)

    return observed


def _observed(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    # Streamed responses come from async generators, or from coroutines that call `context.write`
    # (grpc.health's Watch).
    if inspect.isasyncgenfunction(behavior):
        return _streamed_response(method, behavior)
    return _unary_response(method, behavior)


class ObservedCalls(grpc.aio.ServerInterceptor):
    """Request ID (the client's `x-request-id` metadata if safe, else a new one; sent back in the
    initial metadata), the call's server span, counts by method and status code, latency by method,
    and one log line per call: DEBUG, or WARNING for a server fault. Unknown methods are left to grpc
    (UNIMPLEMENTED), so no client-chosen name becomes a label."""

    def __init__(self) -> None:
        # Per method name (grpc's routing knows only registered names: no client-chosen key grows it).
        self._by_method: dict[str, RewrapOnce] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rewrap = self._by_method.get(method)
        if rewrap is None:
            rewrap = self._by_method[method] = RewrapOnce(lambda behavior, _kind: _observed(method, behavior))
        return rewrap(handler)
