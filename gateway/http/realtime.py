"""WS /v1/realtime?intent=transcription: OpenAI's Realtime transcription protocol over a WebSocket.

The route only carries frames: the session (gateway/realtime/session.py) takes client events and
answers server events; its admission, per-key limit and audio metering are its operation's
(`Operations.live_transcription`); the access middleware has checked the key (header, or the
`openai-insecure-api-key.<key>` subprotocol that OpenAI's browser clients send) before the handshake.

What closes a session, with its close code: the client (or `session.close`, 1000 once everything is
sent), `realtime_max_session_s` and `realtime_idle_timeout_s` (an `error` event, then 1000), more than
`realtime_max_bad_events` invalid events within 10 s (1008), a refused admission (an `error` event,
then 1013, try again later), a gateway shutting down (1012).
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.errors import ErrorType, SamoError
from gateway.http.context import scope_context
from gateway.observability.request_id import accept_request_id, bind_request_id
from gateway.operations import Operations
from gateway.realtime.driving import Ending, LiveLimits, drive
from gateway.realtime.events import BadEvent, ClientEvent, parse_client_event
from gateway.realtime.session import LiveSession
from samo.settings import GatewaySettings

SUBPROTOCOL = "realtime"
"""The subprotocol OpenAI's browser clients offer first; it is chosen when offered (a browser fails a
handshake that chooses none of the subprotocols it offered)."""
NORMAL, POLICY, RESTART, TRY_LATER = 1000, 1008, 1012, 1013


def realtime_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["realtime"])

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket, intent: str | None = None) -> None:
        operations: Operations = websocket.app.state.operations
        context = scope_context(websocket.scope)
        context.request_id = accept_request_id(websocket.headers.get("x-request-id"))
        bind_request_id(context.request_id)
        offered = websocket.scope.get("subprotocols", [])
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        if intent not in (None, "transcription"):
            await _refuse(
                websocket, subprotocol, "intent: this server runs transcription sessions only", POLICY
            )
            return
        try:
            async with operations.live_transcription(context) as session:
                await websocket.accept(subprotocol=subprotocol)
                await _serve(websocket, session, settings)
        except SamoError as error:  # refused before the session started
            code = TRY_LATER if error.type in (ErrorType.OVERLOADED, ErrorType.RATE_LIMITED) else RESTART
            await _refuse(websocket, subprotocol, error.message, code, error.type.value)

    return router


async def _refuse(
    websocket: WebSocket, subprotocol: str | None, message: str, code: int, kind: str = ""
) -> None:
    """An `error` event, then the close code: OpenAI's clients read errors as events."""
    if websocket.client_state == WebSocketState.CONNECTING:
        await websocket.accept(subprotocol=subprotocol)
    if websocket.client_state == WebSocketState.CONNECTED:
        event = BadEvent(message, code=kind or "invalid_value").error_event()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.send_text(event.model_dump_json())
            await websocket.close(code, reason=kind[:120] or None)


async def _serve(websocket: WebSocket, session: LiveSession, settings: GatewaySettings) -> None:
    sender = asyncio.create_task(_send_events(websocket, session))
    limits = LiveLimits(settings.realtime_max_session_s, settings.realtime_idle_timeout_s)
    try:
        ending = await drive(session, lambda: _next_event(websocket, settings), limits)
        if ending is Ending.CLIENT_GONE:  # its decodes stop with the session
            return
        if not session.finished:
            session.events.put_nowait(None)
        await sender  # everything owed is sent before the close
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(POLICY if ending is Ending.FLOODED else NORMAL)
    finally:
        sender.cancel()


async def _send_events(websocket: WebSocket, session: LiveSession) -> None:
    while (event := await session.events.get()) is not None:
        try:
            await websocket.send_text(event.model_dump_json(by_alias=True))
        except (RuntimeError, WebSocketDisconnect):  # the client is gone
            return


async def _next_event(websocket: WebSocket, settings: GatewaySettings) -> ClientEvent | BadEvent | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        return BadEvent("Events are JSON text frames, not binary.", code="invalid_json")
    if len(text) > settings.realtime_max_message_bytes:
        limit = settings.realtime_max_message_bytes
        return BadEvent(f"The event is {len(text)} bytes; the limit is {limit}.", code="message_too_large")
    try:
        return parse_client_event(text)
    except BadEvent as bad:
        return bad
