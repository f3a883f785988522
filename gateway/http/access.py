"""Access for HTTP: one pure ASGI middleware, answering 401 and 429 before the body is read; the caller
goes into the request's context (gateway/http/context.py).

WebSockets (`/v1/realtime`) are checked before their handshake is answered: the key comes from the same
headers, or, since browsers cannot set headers on a WebSocket, from the subprotocol that OpenAI's browser
clients send, `openai-insecure-api-key.<key>`. A refused handshake gets the HTTP error answer where the
server can send one (the ASGI denial-response extension; uvicorn can), else close code 1008."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import SamoError
from gateway.http.context import ACCESS, PRINCIPAL, remember
from gateway.http.errors import error_response
from gateway.security.access import Access
from samo.settings import GatewaySettings

# Probes (kubelet, load balancers) carry no keys and count against no limit; the demo page (served only
# when enabled) asks its user for a key, which its WebSocket then carries.
OPEN_PREFIXES = ("/health/", "/demo/")
KEY_SUBPROTOCOL = "openai-insecure-api-key."


class AccessMiddleware:
    """API key and rate limit on every route but /health/* and /demo/*; the caller is in the request's context."""

    def __init__(self, app: ASGIApp, access: Access, settings: GatewaySettings) -> None:
        self.app = app
        self.access = access
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {
            name: value for name, value in scope["headers"] if name in (b"authorization", b"x-api-key")
        }
        api_key = _text(headers.get(b"x-api-key"))
        if scope["type"] == "websocket" and api_key is None:
            api_key = _subprotocol_key(scope.get("subprotocols", ()))
        client = scope.get("client")
        try:
            principal = await self.access.admit(
                _text(headers.get(b"authorization")), api_key, client[0] if client else None
            )
        except SamoError as error:
            if scope["type"] == "websocket":
                await self._deny_handshake(error, scope, receive, send)
            else:
                await error_response(error, self.settings)(scope, receive, send)
            return
        remember(scope, **{PRINCIPAL: principal, ACCESS: self.access})
        await self.app(scope, receive, send)

    async def _deny_handshake(self, error: SamoError, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return

        async def as_denial(message: Message) -> None:
            kind = message["type"].replace("http.response.", "websocket.http.response.")
            await send({**message, "type": kind})

        await error_response(error, self.settings)({**scope, "type": "http"}, receive, as_denial)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _subprotocol_key(subprotocols: Iterable[str]) -> str | None:
    for offered in subprotocols:
        if offered.startswith(KEY_SUBPROTOCOL):
            return offered.removeprefix(KEY_SUBPROTOCOL)
    return None
