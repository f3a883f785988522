"""Request messages that are not valid protobuf answered INVALID_ARGUMENT, as HTTP answers bad JSON 422.

grpc parses each request with the method's deserializer before the servicer runs, and answers UNKNOWN
(a server fault, to clients and to metrics) when it raises. This interceptor gives every method a
deserializer that returns `MALFORMED` instead, and answers that with the error taxonomy's
`invalid_input`: at once for a single request, or when the stream reaches it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.errors import GRPC_ERROR_TYPE_KEY, GRPC_STATUS, ErrorType, invalid_input
from gateway.grpc_api.handlers import RewrapOnce

MALFORMED = object()
"""Stands for a request message that did not parse."""

MESSAGE = "request message is not valid protobuf for this method (see samo_v1.proto)"


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:  # the message names the type, never the bytes
            return MALFORMED

    return parse


async def _refuse(context: grpc.aio.ServicerContext) -> None:
    context.set_trailing_metadata(((GRPC_ERROR_TYPE_KEY, ErrorType.INVALID_INPUT.value),))
    await context.abort(grpc.StatusCode[GRPC_STATUS[ErrorType.INVALID_INPUT]], MESSAGE)


def _single_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request is MALFORMED:
                await _refuse(context)
            async for message in behavior(request, context):
                yield message

        return checked_stream

    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is MALFORMED:
            await _refuse(context)
        return await behavior(request, context)

    return checked


async def _checked_messages(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in requests:
        if message is MALFORMED:
            # Raised inside the servicer's read loop, which maps the taxonomy to gRPC once.
            raise invalid_input(MESSAGE)
        yield message


def _request_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def checked_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for message in behavior(_checked_messages(requests), context):
                yield message

        return checked_stream

    async def checked(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        return await behavior(_checked_messages(requests), context)

    return checked


class MalformedMessages(grpc.aio.ServerInterceptor):
    """INVALID_ARGUMENT (`samo-error-type: invalid_input`) for request bytes that do not parse."""

    def __init__(self) -> None:
        self._rewrap = RewrapOnce(
            lambda behavior, kind: (
                _single_request(behavior) if kind.startswith("unary") else _request_stream(behavior)
            ),
            request_deserializer=_tolerant,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        return None if handler is None else self._rewrap(handler)
