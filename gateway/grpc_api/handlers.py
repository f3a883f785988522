"""Rewrapping a gRPC method handler, the step every server interceptor here shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def rewrap(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Behavior, str], Behavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind (`unary_unary`, ..., passed to `wrap`) whose behavior is
    `wrap(behavior, kind)`, with the same serializers unless `request_deserializer` replaces one."""
    for kind, make in _KINDS:
        behavior = getattr(handler, kind)
        if behavior:
            return make(
                wrap(behavior, kind),
                request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
