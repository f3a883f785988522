"""Client events into a live session until it ends, for every transport: the idle timeout, the session's
longest life and the flood rule are the same on a WebSocket and a gRPC stream."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.realtime.events import BadEvent, ClientEvent
from gateway.realtime.session import LiveSession

logger = logging.getLogger(__name__)


class Ending(enum.Enum):
    CLIENT_GONE = "client_gone"
    """The client disconnected, or ended its stream without `session.close`."""
    CLOSED = "closed"
    """`session.close` was handled: everything owed is in the events."""
    IDLE = "idle_timeout"
    EXPIRED = "session_expired"
    FLOODED = "flooded"


@dataclass(frozen=True)
class LiveLimits:
    max_session_s: float
    idle_timeout_s: float


NextEvent = Callable[[], Awaitable[ClientEvent | BadEvent | None]]
"""The transport's next client event, a `BadEvent` for one it could not read, or None once the client
is gone."""


async def drive(session: LiveSession, next_event: NextEvent, limits: LiveLimits) -> Ending:
    """Hand the client's events to the session until the session or the client ends; an idle or expired
    session gets its `error` event here."""
    try:
        async with asyncio.timeout(limits.max_session_s):
            ending = await _events(session, next_event, limits.idle_timeout_s)
    except TimeoutError:
        ending = Ending.EXPIRED
    if ending is Ending.EXPIRED:
        session.events.put_nowait(
            BadEvent("Your session hit its maximum duration.", code=ending.value).error_event()
        )
    elif ending is Ending.IDLE:
        message = "The session received no event for too long and is closed."
        session.events.put_nowait(BadEvent(message, code=ending.value).error_event())
    elif ending is Ending.FLOODED:
        logger.info("live session closed: too many invalid events")
    return ending


async def _events(session: LiveSession, next_event: NextEvent, idle_timeout_s: float) -> Ending:
    while not session.finished:
        try:
            event = await asyncio.wait_for(next_event(), idle_timeout_s)
        except TimeoutError:
            return Ending.IDLE
        if event is None:
            return Ending.CLIENT_GONE
        if isinstance(event, BadEvent):
            session.reject(event)
        else:
            await session.handle(event)
        if session.flooded:
            return Ending.FLOODED
    return Ending.CLOSED
