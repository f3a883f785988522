"""The caller of each gRPC call, from the access interceptor to the servicer.

grpc.aio gives a server interceptor no way to hand the method anything but the request and its
`ServicerContext`; so the interceptor records the caller here under the call's context while the
method runs, and the servicer reads it into the request's context (gateway/context.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from gateway.security.access import Principal


class Callers:
    def __init__(self) -> None:
        self._by_call: dict[int, Principal] = {}

    @contextmanager
    def calling(self, call: grpc.aio.ServicerContext, principal: Principal) -> Iterator[None]:
        """`principal` is the caller of `call` while the block runs."""
        self._by_call[id(call)] = principal
        try:
            yield
        finally:
            self._by_call.pop(id(call), None)

    def of(self, call: grpc.aio.ServicerContext) -> Principal | None:
        """The caller the access check admitted for `call` (None: the gateway runs without it)."""
        return self._by_call.get(id(call))
