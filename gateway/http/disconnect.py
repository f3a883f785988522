"""Stopping a request's work when its HTTP client goes away.

Starlette runs a route to its end whether or not anyone waits for the answer; for a transcription of
an hour of audio that is minutes of Triton time for nobody. Once the body has been read, the server's
`receive` only returns when the client disconnects (or the response is complete), so waiting on it
beside the work tells when to cancel the work. Streams of events need none of this: Starlette stops
them when a write fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499
"""The status logged and counted for a request whose client left first (nginx's convention); the
client never sees it."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result; or None, with `work` cancelled, once the client disconnects. Call it after the
    request's body has been read."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        logger.info("client disconnected from %s; its work is cancelled", request.url.path)
        return None
    finally:
        gone.cancel()
        task.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
