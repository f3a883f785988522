"""`samo.v1.Samo`: converts messages, validates with the HTTP schema, calls the same services."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from gateway.admission import Ticket
from gateway.emotions.request import emotion_request_model
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
from gateway.grpc_api.convert import (
    emotion_response,
    journal_message,
    segment_message,
    summarize_response,
    transcribe_response,
)
from gateway.journal.request import JournalAudioOptions, journal_text_model
from gateway.results import EmotionOptions, JournalAnalysis, Segment, SummaryOptions, Transcript
from gateway.services import Services
from gateway.summarization.request import summary_request_model
from gateway.validation import validate_body
from samo.contracts.whisper import DecodeOptions
from samo.settings import GatewaySettings

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["SamoServicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


def samo_errors(handler: Handler) -> Handler:
    """The error taxonomy mapped to gRPC status codes, once, with the same messages as HTTP."""

    @functools.wraps(handler)
    async def wrapper(self: SamoServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)
            raise  # unreachable: abort raises

    return wrapper


class SamoServicer(samo_v1_pb2_grpc.SamoServicer):
    def __init__(self, services: Services, settings: GatewaySettings) -> None:
        self.services = services
        self.costs = services.admission.costs
        self.retry_after_s = settings.retry_after_s
        self.emotion_request = emotion_request_model(settings)
        self.journal_text = journal_text_model(settings)
        self.summary_request = summary_request_model(settings)

    @samo_errors
    async def DetectEmotions(
        self, request: pb.DetectEmotionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetectEmotionsResponse:
        body = validate_body(
            self.emotion_request,
            {
                "texts": list(request.texts),
                "threshold": _optional(request, "threshold", None),
                "top_k": _optional(request, "top_k", None),
                "model": request.model or None,
            },
        )
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k, model=body.model)
        with self.services.admission.admit(self.costs.texts(len(body.texts))):
            result = await self.services.emotions.detect(body.texts, options)
        return emotion_response(result)

    @samo_errors
    async def Transcribe(
        self, request: pb.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranscribeResponse:
        options = validate_body(
            DecodeOptions,
            {
                "language": request.language or None,
                "task": request.task or "transcribe",
                "beam_size": _optional(request, "beam_size", 5),
                "word_timestamps": request.word_timestamps,
            },
        )
        # One window now; the transcription charges the rest once the duration is read.
        with self.services.admission.admit(self.costs.audio(0)):
            result = await self.services.transcription.transcribe(
                request.audio, options, request.model or None
            )
        return transcribe_response(result)

    def _journal_cost(self, request: pb.AnalyzeJournalRequest) -> int:
        summarization = self.services.summarization
        if request.WhichOneof("entry") == "audio":
            return self.costs.journal_audio(summarization)
        return self.costs.journal_text(request.text, summarization)

    def _journal_items(self, request: pb.AnalyzeJournalRequest) -> AsyncIterator[Segment | JournalAnalysis]:
        options = {
            "threshold": _optional(request, "threshold", None),
            "top_k": _optional(request, "top_k", None),
        }
        if request.WhichOneof("entry") == "audio":
            audio = validate_body(
                JournalAudioOptions,
                {
                    **options,
                    "language": request.language or None,
                    "beam_size": _optional(request, "beam_size", 5),
                    "model": request.transcription_model or None,
                },
            )
            decode = DecodeOptions(language=audio.language, beam_size=audio.beam_size)
            emotion = EmotionOptions(threshold=audio.threshold, top_k=audio.top_k)
            return self.services.journal.stream_audio(request.audio, decode, emotion, audio.model)
        body = validate_body(self.journal_text, {"text": request.text, **options})
        return self.services.journal.stream_text(
            body.text, EmotionOptions(threshold=body.threshold, top_k=body.top_k)
        )

    @samo_errors
    async def AnalyzeJournal(
        self, request: pb.AnalyzeJournalRequest, context: grpc.aio.ServicerContext
    ) -> pb.JournalAnalysis:
        analysis = None
        items = self._journal_items(request)  # validates before anything is admitted
        with self.services.admission.admit(self._journal_cost(request)):
            async for item in items:
                analysis = item
        assert isinstance(analysis, JournalAnalysis)
        return journal_message(analysis)

    async def StreamJournal(
        self, request: pb.AnalyzeJournalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JournalEvent]:
        try:
            items = self._journal_items(request)
            with self._held_until_done(self._journal_cost(request), context):
                async for item in items:
                    if isinstance(item, JournalAnalysis):
                        yield pb.JournalEvent(analysis=journal_message(item))
                    else:
                        yield pb.JournalEvent(segment=segment_message(item))
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)

    async def TranscribeStream(
        self, chunks: AsyncIterator[pb.AudioChunk], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeEvent]:
        try:
            # Admitted before any chunk is read, so a refused upload is never buffered; one window
            # now, the rest once the transcription has read the duration.
            with self._held_until_done(self.costs.audio(0), context):
                first, data = await self._collect(chunks)
                options = validate_body(
                    DecodeOptions,
                    {
                        "language": first.language or None,
                        "beam_size": _optional(first, "beam_size", 5),
                        "word_timestamps": first.word_timestamps,
                    },
                )
                async for item in self.services.transcription.stream(data, options, first.model or None):
                    if isinstance(item, Transcript):
                        yield pb.TranscribeEvent(transcript=transcribe_response(item))
                    else:
                        yield pb.TranscribeEvent(segment=segment_message(item))
        except SamoError as exc:
            await _abort(context, exc, self.retry_after_s)

    def _held_until_done(self, cost: int, context: grpc.aio.ServicerContext) -> Ticket:
        """A stream's ticket, released when the call ends however it ends: a client that cancels leaves
        the handler suspended at a `yield`, where no `finally` of its own runs until it is collected."""
        ticket = self.services.admission.admit(cost)
        context.add_done_callback(lambda _: ticket.release())
        return ticket

    async def _collect(self, chunks: AsyncIterator[pb.AudioChunk]) -> tuple[pb.AudioChunk, bytes]:
        """The first chunk (it carries the options) and all the audio, refused past the size limit."""
        first = None
        parts: list[bytes] = []
        size = 0
        limit = self.services.settings.max_audio_bytes
        async for chunk in chunks:
            first = first or chunk
            size += len(chunk.data)
            if size > limit:
                raise SamoError(ErrorType.TOO_LARGE, f"audio is over the {limit / (1 << 20):.1f} MB limit")
            parts.append(chunk.data)
        if first is None:
            raise invalid_input("send the audio in at least one chunk")
        return first, b"".join(parts)

    @samo_errors
    async def Summarize(
        self, request: pb.SummarizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SummarizeResponse:
        body = validate_body(
            self.summary_request,
            {
                "texts": list(request.texts),
                "max_new_tokens": _optional(request, "max_new_tokens", None),
                "min_new_tokens": _optional(request, "min_new_tokens", None),
                "num_beams": _optional(request, "num_beams", None),
                "model": request.model or None,
                "long_input": request.long_input or "truncate",
            },
        )
        options = SummaryOptions.model_validate(body.model_dump(exclude={"texts"}))
        cost = self.costs.summaries(len(body.texts), options, self.services.summarization)
        with self.services.admission.admit(cost):
            result = await self.services.summarization.summarize(body.texts, options)
        return summarize_response(result)


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
