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


class RewrapOnce:
    """`rewrap` remembered per handler: grpc asks every interceptor for the method's handler on every
    call, and what an interceptor wraps depends on the method only, so each handler is wrapped once
    (the per-call part runs inside the wrapped behavior, with the call's context)."""

    def __init__(
        self,
        wrap: Callable[[Behavior, str], Behavior],
        request_deserializer: Callable[[Callable[[bytes], Any] | None], Callable[[bytes], Any] | None]
        | None = None,
    ) -> None:
        self.wrap = wrap
        self.request_deserializer = request_deserializer
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def __call__(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        found = self._wrapped.get(id(handler))
        if found is not None and found[0] is handler:
            return found[1]
        deserializer = (
            self.request_deserializer(handler.request_deserializer) if self.request_deserializer else None
        )
        wrapped = rewrap(handler, self.wrap, deserializer)
        self._wrapped[id(handler)] = (handler, wrapped)  # the handler kept alive: its id stays its own
        return wrapped
