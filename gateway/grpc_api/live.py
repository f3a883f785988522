"""`samo.v1.Samo/TranscribeLive`: the live session of WS /v1/realtime over a gRPC stream. Messages become
the session's client events and its server events become messages; the session, its admission and its
limits are the same objects the WebSocket uses (gateway/realtime, `Operations.live_transcription`).

Ending the request stream ends the session as `session_close` does (the open turn is committed and
every `completed` sent); more than `realtime_max_bad_events` invalid events within 10 s, or a stream
without one valid event, end the call with INVALID_ARGUMENT (after the `error` events); an idle or
expired session gets its `error` event, then the call ends OK.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pydantic import ValidationError

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api.convert import journal_message
from gateway.realtime.driving import Ending, LiveLimits, drive
from gateway.realtime.events import (
    Append,
    BadEvent,
    BetaSessionUpdated,
    Clear,
    ClientEvent,
    Close,
    Commit,
    Committed,
    Completed,
    Delta,
    ErrorEvent,
    JournalCompleted,
    LiveConfig,
    Partial,
    ServerEvent,
    SessionCreated,
    SessionUpdate,
    SpeechStarted,
    SpeechStopped,
    TranscriptionFailed,
)
from gateway.realtime.session import LiveSession
from gateway.validation import describe_errors
from samo.settings import GatewaySettings

FLOODED = "too many invalid events: the session is closed"
NOTHING_VALID = "the stream carried no valid event"


async def serve_live(
    session: LiveSession,
    requests: AsyncIterator[pb.LiveClientEvent],
    context: grpc.aio.ServicerContext,
    settings: GatewaySettings,
) -> AsyncIterator[pb.LiveServerEvent]:
    """The session's events as messages while the requests drive it (gateway/realtime/driving.py)."""
    limits = LiveLimits(settings.realtime_max_session_s, settings.realtime_idle_timeout_s)

    async def next_event() -> ClientEvent | BadEvent | None:
        message = await anext(requests, None)
        if message is None:
            return None
        if message.ByteSize() > settings.realtime_max_message_bytes:
            limit = settings.realtime_max_message_bytes
            return BadEvent(
                f"The event is {message.ByteSize()} bytes; the limit is {limit}.", code="message_too_large"
            )
        return client_event(message)

    async def run() -> tuple[Ending, int]:
        try:
            ending = await drive(session, next_event, limits)
        except BaseException:  # a request that did not parse (INVALID_ARGUMENT), a cancelled call
            session.events.put_nowait(None)
            raise
        handled = session.handled
        if ending is Ending.CLIENT_GONE:  # the request stream ended: the session closes as asked
            await session.handle(Close(type="session.close"))
        elif not session.finished:
            session.events.put_nowait(None)
        return ending, handled

    driver = asyncio.create_task(run())
    try:
        while (event := await session.events.get()) is not None:
            yield live_event_message(event)
        ending, handled = await driver
        if ending is Ending.FLOODED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, FLOODED)
        if not handled:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NOTHING_VALID)
    finally:
        driver.cancel()


def client_event(message: pb.LiveClientEvent) -> ClientEvent | BadEvent:
    """The client event a message carries, or what is wrong with it."""
    event_id = message.event_id or None
    kind = message.WhichOneof("event")
    try:
        if kind == "audio":
            return Append(
                type="input_audio_buffer.append",
                event_id=event_id,
                audio=base64.b64encode(message.audio).decode(),
            )
        if kind == "commit":
            return Commit(type="input_audio_buffer.commit", event_id=event_id)
        if kind == "clear":
            return Clear(type="input_audio_buffer.clear", event_id=event_id)
        if kind == "session_close":
            return Close(type="session.close", event_id=event_id)
        if kind == "session_update":
            return SessionUpdate.model_validate(
                {"type": "session.update", "event_id": event_id, "session": _session(message.session_update)}
            )
    except ValidationError as error:
        return BadEvent(describe_errors(error.errors()), event_id=event_id)
    return BadEvent("An event sets one of its `event` fields.", param="event", event_id=event_id)


def _session(update: pb.LiveSessionUpdate) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if update.HasField("rate"):
        given["format"] = {"type": "audio/pcm", "rate": update.rate}
    transcription = {
        name: getattr(update, name) for name in ("model", "language", "prompt") if update.HasField(name)
    }
    if transcription:
        given["transcription"] = transcription
    turns = update.WhichOneof("turns")
    if turns == "manual_commit" and update.manual_commit:
        given["turn_detection"] = None
    elif turns == "server_vad":
        vad = update.server_vad
        fields = ("threshold", "prefix_padding_ms", "silence_duration_ms")
        given["turn_detection"] = {
            "type": "server_vad",
            **{f: getattr(vad, f) for f in fields if vad.HasField(f)},
        }
    session: dict[str, Any] = {"type": "transcription", "audio": {"input": given}}
    if update.HasField("journal"):
        session["samo"] = {"journal": update.journal}
    return session


def live_event_message(event: ServerEvent) -> pb.LiveServerEvent:
    kind = getattr(event, "type", "")
    message = pb.LiveServerEvent(event_id=event.event_id, type=kind, item_id=getattr(event, "item_id", ""))
    if isinstance(event, SessionCreated | BetaSessionUpdated):
        message.session.CopyFrom(_session_message(event.config))
    elif isinstance(event, SpeechStarted):
        message.audio_ms = event.audio_start_ms
    elif isinstance(event, SpeechStopped):
        message.audio_ms = event.audio_end_ms
    elif isinstance(event, Committed):
        message.committed.previous_item_id = event.previous_item_id or ""
    elif isinstance(event, Delta):
        message.delta = event.delta
    elif isinstance(event, Partial):
        message.partial.CopyFrom(pb.LivePartial(confirmed=event.confirmed, tail=event.tail))
    elif isinstance(event, Completed):
        message.completed.CopyFrom(pb.LiveCompleted(transcript=event.transcript, seconds=event.usage.seconds))
    elif isinstance(event, ErrorEvent | TranscriptionFailed):
        detail = event.error
        message.error.CopyFrom(
            pb.LiveError(
                type=detail.type,
                code=detail.code or "",
                message=detail.message,
                param=detail.param or "",
                event_id=detail.event_id or "",
            )
        )
    elif isinstance(event, JournalCompleted):
        message.journal.CopyFrom(journal_message(event.analysis))
    else:
        message.signal.SetInParent()
    return message


def _session_message(config: LiveConfig) -> pb.LiveSession:
    transcription = config.transcription
    vad = config.turn_detection
    return pb.LiveSession(
        rate=config.rate,
        model=transcription.model or "",
        language=transcription.language or "",
        prompt=transcription.prompt or "",
        server_vad=None
        if vad is None
        else pb.LiveTurnDetection(
            threshold=vad.threshold,
            prefix_padding_ms=vad.prefix_padding_ms,
            silence_duration_ms=vad.silence_duration_ms,
        ),
        journal=config.journal,
    )
