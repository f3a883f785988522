"""Server-sent events: the framing shared by the streaming HTTP endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.admission import Ticket
from gateway.errors import SamoError
from gateway.operations import OperationStream

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


class _EventStream(StreamingResponse):
    """Events that hold their admission ticket (units; the deadline travels in the request's context)
    until the stream ends, is cut by the client or fails, and then stop the work behind them."""

    def __init__(self, events: AsyncIterator[bytes], stream: OperationStream[Any]) -> None:
        super().__init__(_releasing(events, stream.ticket), media_type=EVENT_STREAM)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.ticket.release()
            # A client that hung up leaves both generators suspended: close them now, which cancels
            # their Triton streams, rather than whenever they are garbage-collected.
            await _close(self.body_iterator)
            await _close(self.stream.rest)


async def _releasing(events: AsyncIterator[bytes], ticket: Ticket) -> AsyncIterator[bytes]:
    """The events, the units released as soon as the last is out: before the response's end reaches
    the client, so a client that saw the stream end finds its units free."""
    async for chunk in events:
        yield chunk
    ticket.release()


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def event_response(stream: OperationStream[Item], render: Render, last: type) -> StreamingResponse:
    """Stream the operation's items up to and including the first of type `last`. The first was awaited
    by the operation, so errors before any output stay ordinary HTTP errors; later ones travel as an
    `error` event, since the headers have gone out. The stream's ticket is held until it ends."""
    return _EventStream(_events(stream.first, stream.rest, render, last), stream)


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
