"""The request's context (gateway/context.py) built from what the HTTP middlewares learned: its ID
(gateway/http/observability.py) and its caller (gateway/http/access.py), kept in the ASGI scope's
per-request `state`, which Starlette exposes as `request.state`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from gateway.context import RequestContext

REQUEST_ID = "samo_request_id"
PRINCIPAL = "samo_principal"
ACCESS = "samo_access"


def remember(scope: Scope, **values: Any) -> None:
    """Keep `values` for this request's context (a middleware's findings)."""
    scope.setdefault("state", {}).update(values)


def request_context(request: Request) -> RequestContext:
    return scope_context(request.scope)


def scope_context(scope: Scope) -> RequestContext:
    state = scope.get("state", {})
    return RequestContext(
        request_id=state.get(REQUEST_ID), principal=state.get(PRINCIPAL), access=state.get(ACCESS)
    )
