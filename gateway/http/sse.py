"""Server-sent events: the framing shared by the streaming HTTP endpoints."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

EVENT_STREAM = "text/event-stream"


def wants_events(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("accept", "")


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
