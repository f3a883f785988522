"""Access for HTTP: one pure ASGI middleware, answering 401 and 429 before the body is read; the caller
goes into the request's context (gateway/http/context.py)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import SamoError
from gateway.http.context import ACCESS, PRINCIPAL, remember
from gateway.http.errors import error_response
from gateway.security.access import Access
from samo.settings import GatewaySettings

# Probes (kubelet, load balancers) carry no keys and count against no limit.
OPEN_PREFIX = "/health/"


class AccessMiddleware:
    """API key and rate limit on every route but /health/*; the caller is in the request's context."""

    def __init__(self, app: ASGIApp, access: Access, settings: GatewaySettings) -> None:
        self.app = app
        self.access = access
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {
            name: value for name, value in scope["headers"] if name in (b"authorization", b"x-api-key")
        }
        client = scope.get("client")
        try:
            principal = await self.access.admit(
                _text(headers.get(b"authorization")),
                _text(headers.get(b"x-api-key")),
                client[0] if client else None,
            )
        except SamoError as error:
            await error_response(error, self.settings)(scope, receive, send)
            return
        remember(scope, **{PRINCIPAL: principal, ACCESS: self.access})
        await self.app(scope, receive, send)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
