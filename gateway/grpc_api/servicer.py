"""`samo.v1.Samo`: converts messages to the operations' fields and their answers to messages; the
operations (gateway/operations) validate, admit and run, as they do for HTTP."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from gateway.context import RequestContext
from gateway.errors import (
    GRPC_ERROR_TYPE_KEY,
    GRPC_RETRY_AFTER_KEY,
    GRPC_STATUS,
    RETRYABLE,
    ErrorType,
    SamoError,
    invalid_input,
)
from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from gateway.grpc_api.calls import Callers
from gateway.grpc_api.convert import (
    emotion_response,
    journal_message,
    segment_message,
    summarize_response,
    transcribe_response,
)
from gateway.grpc_api.live import serve_live
from gateway.observability.request_id import current_request_id
from gateway.operations import AudioUpload, Operations, OperationStream, Upload, uploaded
from gateway.results import JournalAnalysis, Transcript
from gateway.security import Access
from samo.settings import GatewaySettings

Handler = TypeVar("Handler", bound=Callable[["SamoServicer", Any, grpc.aio.ServicerContext], Awaitable[Any]])
"""A unary method of the servicer; decorated, it keeps its signature (its parameters' names are the base's)."""


def samo_errors(handler: Handler) -> Handler:
    """The error taxonomy mapped to gRPC status codes, once, with the same messages as HTTP."""

    @functools.wraps(handler)
    async def wrapper(self: SamoServicer, request: Message, context: grpc.aio.ServicerContext) -> Message:
        try:
            return await handler(self, request, context)
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)
            raise  # unreachable: abort raises

    return cast(Handler, wrapper)


class SamoServicer(samo_v1_pb2_grpc.SamoServicer):
    def __init__(
        self,
        operations: Operations,
        settings: GatewaySettings,
        callers: Callers | None = None,
        access: Access | None = None,
    ) -> None:
        self.operations = operations
        self.settings = settings
        self.retry_after_s = settings.retry_after_s
        self.callers = callers or Callers()
        self.access = access

    def _context(self, call: grpc.aio.ServicerContext) -> RequestContext:
        """The request's context: its ID (set by the observing interceptor for log records) and the
        caller the access interceptor admitted."""
        principal = self.callers.of(call)
        return RequestContext(
            request_id=current_request_id(),
            principal=principal,
            access=self.access if principal is not None else None,
        )

    @samo_errors
    async def DetectEmotions(
        self, request: pb.DetectEmotionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetectEmotionsResponse:
        fields = {
            "texts": list(request.texts),
            "threshold": _optional(request, "threshold", None),
            "top_k": _optional(request, "top_k", None),
            "model": request.model or None,
        }
        return emotion_response(await self.operations.emotions(self._context(context), fields))

    @samo_errors
    async def Transcribe(
        self, request: pb.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranscribeResponse:
        upload = uploaded(request.audio, _transcribe_fields(request))
        return transcribe_response(await self.operations.transcribe(self._context(context), upload))

    @samo_errors
    async def AnalyzeJournal(
        self, request: pb.AnalyzeJournalRequest, context: grpc.aio.ServicerContext
    ) -> pb.JournalAnalysis:
        analysis = await self.operations.journal(self._context(context), _journal_entry(request))
        return journal_message(analysis)

    async def StreamJournal(
        self, request: pb.AnalyzeJournalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JournalEvent]:
        try:
            stream = await self.operations.journal_stream(self._context(context), _journal_entry(request))
            async for item in _held_until_done(stream, context):
                if isinstance(item, JournalAnalysis):
                    yield pb.JournalEvent(analysis=journal_message(item))
                else:
                    yield pb.JournalEvent(segment=segment_message(item))
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)

    async def TranscribeStream(
        self, request_iterator: AsyncIterator[pb.AudioChunk], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeEvent]:
        try:
            # The operation admits before any chunk is read, so a refused upload is never buffered.
            upload = self._collected(request_iterator)
            stream = await self.operations.transcribe_stream(self._context(context), upload)
            async for item in _held_until_done(stream, context):
                if isinstance(item, Transcript):
                    yield pb.TranscribeEvent(transcript=transcribe_response(item))
                else:
                    yield pb.TranscribeEvent(segment=segment_message(item))
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)

    async def TranscribeLive(
        self, request_iterator: AsyncIterator[pb.LiveClientEvent], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LiveServerEvent]:
        try:
            async with self.operations.live_transcription(self._context(context)) as session:
                async for event in serve_live(session, request_iterator, context, self.settings):
                    yield event
        except SamoError as exc:  # refused before the session started
            await _abort(context, exc, self.retry_after_s)

    def _collected(self, chunks: AsyncIterator[pb.AudioChunk]) -> Upload:
        """Reads every chunk: the first carries the options; refused past the size limit."""
        limit = self.settings.max_audio_bytes

        async def read() -> AudioUpload:
            first = None
            parts: list[bytes] = []
            size = 0
            async for chunk in chunks:
                first = first or chunk
                size += len(chunk.data)
                if size > limit:
                    raise SamoError(
                        ErrorType.TOO_LARGE, f"audio is over the {limit / (1 << 20):.1f} MB limit"
                    )
                parts.append(chunk.data)
            if first is None:
                raise invalid_input("send the audio in at least one chunk")
            return AudioUpload(b"".join(parts), _transcribe_fields(first))

        return read

    @samo_errors
    async def Summarize(
        self, request: pb.SummarizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SummarizeResponse:
        fields = {
            "texts": list(request.texts),
            "max_new_tokens": _optional(request, "max_new_tokens", None),
            "min_new_tokens": _optional(request, "min_new_tokens", None),
            "num_beams": _optional(request, "num_beams", None),
            "model": request.model or None,
            "long_input": request.long_input or "truncate",
        }
        return summarize_response(await self.operations.summarize(self._context(context), fields))


def _transcribe_fields(message: pb.TranscribeRequest | pb.AudioChunk) -> dict[str, Any]:
    return {
        "language": message.language or None,
        "task": getattr(message, "task", "") or "transcribe",
        "beam_size": _optional(message, "beam_size", 5),
        "word_timestamps": message.word_timestamps,
        "model": message.model or None,
    }


def _journal_entry(request: pb.AnalyzeJournalRequest) -> dict[str, Any] | Upload:
    options = {
        "threshold": _optional(request, "threshold", None),
        "top_k": _optional(request, "top_k", None),
    }
    if request.WhichOneof("entry") == "audio":
        fields = {
            **options,
            "language": request.language or None,
            "beam_size": _optional(request, "beam_size", 5),
            "model": request.transcription_model or None,
        }
        return uploaded(request.audio, fields)
    return {"text": request.text, **options}


async def _held_until_done(
    stream: OperationStream[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    """The stream's items, its ticket released when the call ends however it ends: a client that
    cancels leaves the handler suspended at a `yield`, where no `finally` of its own runs until it is
    collected."""
    context.add_done_callback(
        lambda _: stream.ticket.release()  # pyright: ignore[reportArgumentType]  # typeshed's `_DoneCallback` is a class, not a callable Protocol
    )
    async for item in stream.items():
        yield item


def _optional(message: Message, field: str, default: object) -> object:
    """A proto3 `optional` field's value, or `default` when the client left it unset."""
    return getattr(message, field) if message.HasField(field) else default


async def _abort(context: grpc.aio.ServicerContext, exc: SamoError, retry_after_s: int) -> None:
    """The error taxonomy mapped to a gRPC status, with the exact type (and for retryable errors the
    seconds to wait, as HTTP's Retry-After) in trailing metadata."""
    metadata = [(GRPC_ERROR_TYPE_KEY, exc.type.value)]
    if exc.type in RETRYABLE:
        metadata.append((GRPC_RETRY_AFTER_KEY, str(exc.retry_after_s or retry_after_s)))
    context.set_trailing_metadata(tuple(metadata))
    await context.abort(grpc.StatusCode[GRPC_STATUS[exc.type]], exc.message)
