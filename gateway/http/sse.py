"""Server-sent events: the framing shared by the streaming HTTP endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from starlette.requests import Request

from gateway.errors import SamoError

EVENT_STREAM = "text/event-stream"
# The OpenAPI entry for a route that also answers `Accept: text/event-stream`.
EVENTS: dict[str, Any] = {"content": {EVENT_STREAM: {"schema": {"type": "string"}}}}

Item = TypeVar("Item")
# An item's event: its name and JSON data.
Render = Callable[[Any], tuple[str, dict[str, Any]]]


def wants_events(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("accept", "")


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def event_response(first: Item, rest: AsyncIterator[Item], render: Render, last: type) -> StreamingResponse:
    """Stream `first`, then `rest` up to and including the first item of type `last`. `first` was awaited
    by the caller, so errors before any output stay ordinary HTTP errors; later ones travel as an
    `error` event, since the headers have gone out."""
    return StreamingResponse(_events(first, rest, render, last), media_type=EVENT_STREAM)


async def _events(first: Item, rest: AsyncIterator[Item], render: Render, last: type) -> AsyncIterator[bytes]:
    item = first
    try:
        while True:
            yield event(*render(item))
            if isinstance(item, last):
                return
            item = await anext(rest)
    except SamoError as exc:
        yield event("error", {"type": exc.type.value, "message": exc.message})
