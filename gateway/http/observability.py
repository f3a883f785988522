"""The HTTP side: one pure ASGI middleware gives each request its ID, span, metrics and log line.

Starlette's BaseHTTPMiddleware costs about a millisecond per request; this costs microseconds.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.context import REQUEST_ID, remember
from gateway.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS, INFLIGHT, labelled
from gateway.observability.request_id import HEADER, accept_request_id, bind_request_id
from gateway.observability.tracing import (
    REQUEST_ID_ATTRIBUTE,
    begin_server_span,
    end_server_span,
    tracing_enabled,
)

logger = logging.getLogger(__name__)

_HEADER_KEY = HEADER.lower().encode()


class ObservedRequests:
    """Request ID (the client's `X-Request-ID` if safe, else a new one; returned in the response),
    the request's server span, counts and latency by route template (never by raw path or body), and
    one log line per request: DEBUG, or WARNING for a 5xx."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        offered = next((value for key, value in scope["headers"] if key == _HEADER_KEY), None)
        request_id = accept_request_id(offered)
        bind_request_id(request_id)  # for log records
        remember(scope, **{REQUEST_ID: request_id})  # for the request's context
        method = scope["method"]
        span = None
        if tracing_enabled():
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            attributes = {"http.request.method": method, REQUEST_ID_ATTRIBUTE: request_id}
            span = begin_server_span(method, headers, attributes)
        status = 500
        echoed = (_HEADER_KEY, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        in_flight = labelled(INFLIGHT, "http")
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            labelled(HTTP_REQUESTS, route, str(status)).inc()
            labelled(HTTP_LATENCY, route).observe(elapsed)
            if span is not None:
                span.update_name(f"{method} {route}")
            end_server_span(
                span,
                failed=status >= 500,
                attributes={"http.route": route, "http.response.status_code": status},
            )
            level = logging.WARNING if status >= 500 else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(level, "%s %s -> %d in %.1f ms", method, route, status, elapsed * 1000)
