"""One entry per operation, for every transport.

Each entry owns what an operation is, whichever transport carries it: validation of its fields into
the typed request (the same schema and messages on every transport), its options, admission through
the one path that refuses new work while the gateway drains (`Operations.admitted`), the request's
deadline (started by admission, carried by the request's context), the service call and the typed
result. HTTP routes (gateway/http), gRPC methods (gateway/grpc_api) and what comes next (WebSocket
sessions, batch lines) only convert formats and map errors.

Fields arrive as a mapping (gRPC messages, batch lines) or as an already-parsed schema instance (HTTP,
where FastAPI parses the body to document it in OpenAPI); either is validated here, an instance
passing through unchanged. Audio arrives as an `Upload`: read only once the request is admitted, so a
request refused for load or shutdown costs no upload.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.admission import Ticket
from gateway.context import RequestContext
from gateway.emotions.request import emotion_request_model
from gateway.errors import ErrorType, SamoError, invalid_input
from gateway.journal.request import JournalAudioOptions, journal_text_model
from gateway.operations.costs import OperationCosts
from gateway.operations.gate import admit_caller, requires
from gateway.operations.metering import Meter, metered
from gateway.operations.openai_transcription import (
    MODEL_ALIASES,
    Granularity,
    OpenAIAnswer,
    ResponseFormat,
    openai_answer,
)
from gateway.realtime.session import LiveOptions, LiveSession, LiveUsage
from gateway.results import (
    EmotionOptions,
    EmotionResult,
    JournalAnalysis,
    Segment,
    SummaryOptions,
    SummaryResult,
    Transcript,
)
from gateway.security.scopes import Scope
from gateway.services import Services
from gateway.summarization.request import summary_request_model
from gateway.usage.metrics import TenantMetrics
from gateway.usage.units import Units
from gateway.validation import validate_body
from samo.contracts.whisper import DecodeOptions

Item = TypeVar("Item")
Fields = Mapping[str, Any] | BaseModel

SHUTTING_DOWN = "the gateway is shutting down; retry on another replica"
LIVE_OPERATION = "live_transcription"
"""How live sessions' turns are named in the usage ledger and the tenants' metrics."""


@dataclass(frozen=True)
class AudioUpload:
    """An upload once read: the audio's bytes and the request's other fields."""

    data: bytes
    fields: Mapping[str, Any] = field(default_factory=dict)


Upload = Callable[[], Awaitable[AudioUpload]]
"""Reads the upload (HTTP form, gRPC chunks, a stored file); called once the request is admitted."""


def uploaded(data: bytes, fields: Mapping[str, Any] | None = None) -> Upload:
    """An upload already in memory (a unary gRPC message, a test)."""

    async def read() -> AudioUpload:
        return AudioUpload(data, fields or {})

    return read


class TranscribeFields(BaseModel):
    """`/v1/transcribe` and gRPC `Transcribe`/`TranscribeStream`: the decode options and the model."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = None
    task: str = "transcribe"
    beam_size: int = 5
    word_timestamps: bool = False
    model: str | None = Field(default=None, max_length=128)


class OpenAITranscriptionFields(BaseModel):
    """OpenAI's `/v1/audio/transcriptions` form, as its clients send it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="whisper-1", max_length=128)
    language: str | None = Field(default=None, min_length=2, max_length=3)
    prompt: str | None = Field(default=None, max_length=1000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Granularity] | None = None


@dataclass
class OperationStream(Generic[Item]):
    """A streaming operation's answer: its first item (awaited before the stream is handed out, so
    errors before any output stay ordinary errors), the rest, and the ticket the stream holds until
    it ends. The transport releases the ticket however the stream ends (`Ticket.release` is idempotent):
    a client that goes away leaves a generator suspended, where no `finally` runs until collection."""

    first: Item
    rest: AsyncIterator[Item]
    ticket: Ticket

    async def items(self) -> AsyncGenerator[Item, None]:
        """Every item, the ticket released once the last is out, or the stream fails or is closed."""
        try:
            yield self.first
            async for item in self.rest:
                yield item
        finally:
            self.ticket.release()
            await _close(self.rest)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class Operations:
    """Every operation's one entry, over one gateway process's services."""

    def __init__(self, services: Services, meter: Meter | None = None) -> None:
        self.services = services
        self.meter = meter or Meter(TenantMetrics())
        """Where answered requests are counted: per-tenant metrics, the usage ledger (gateway/usage)."""
        settings = services.settings
        self.admission = services.admission
        self.costs = OperationCosts(services.admission.costs, services.summarization)
        self.draining = False
        """Set on SIGTERM (gateway/shutdown.py): not ready, new work refused, running work finishes."""
        self.emotion_request = emotion_request_model(settings)
        self.summary_request = summary_request_model(settings)
        self.journal_text_request = journal_text_model(settings)
        self.live_options = LiveOptions(
            partial_interval_s=settings.realtime_partial_interval_s,
            first_partial_interval_s=settings.realtime_first_partial_interval_s,
            final_context_s=settings.realtime_final_context_s,
            partial_beam_size=settings.realtime_partial_beam_size,
            final_beam_size=settings.realtime_final_beam_size,
            window_padding_s=settings.realtime_window_padding_s,
            max_bad_events=settings.realtime_max_bad_events,
            max_speedup=settings.realtime_max_speedup,
        )

    # -- the one admission path --

    def begin_drain(self) -> None:
        self.draining = True

    def admit(self, context: RequestContext, cost: int) -> Ticket:
        """`cost` work units for the request (its ticket, also set on `context`, starts its deadline),
        or at once UNAVAILABLE (503) while draining, OVERLOADED (429) when the budget cannot take them."""
        if self.draining:
            raise SamoError(ErrorType.UNAVAILABLE, SHUTTING_DOWN)
        share = self.services.settings.batch_admission_share if context.background else 1.0
        ticket = self.admission.admit(cost, share=share)
        context.ticket = ticket
        return ticket

    @contextlib.contextmanager
    def admitted(self, context: RequestContext, cost: int) -> Iterator[Ticket]:
        """`cost` units held for the block. A request already admitted (an upload, admitted before its
        body was read) keeps its ticket, topped up to `cost`; its owner releases it."""
        held = context.ticket
        if held is not None and not held.released:
            if cost > held.cost:
                held.add(cost - held.cost)
            yield held
            return
        with self.admit(context, cost) as ticket:
            yield ticket

    def admit_upload(self, context: RequestContext) -> Ticket:
        """Admission before an upload's body is read (HTTP forms, gRPC chunk streams): one Whisper
        window; the transcription charges the rest once it reads the duration."""
        return self.admit(context, self.costs.upload())

    async def _streamed(self, ticket: Ticket, items: AsyncIterator[Item]) -> OperationStream[Item]:
        try:
            first = await anext(items)
        except BaseException:
            ticket.release()
            await _close(items)
            raise
        return OperationStream(first, items, ticket)

    async def readiness(self) -> str | None:
        """None when ready to serve, else why not (shutting down, or the models' health)."""
        if self.draining:
            return "the gateway is shutting down"
        return await self.services.readiness()

    # -- emotions --

    @requires(Scope.EMOTIONS)
    @metered("emotions")
    async def emotions(self, context: RequestContext, fields: Fields) -> EmotionResult:
        body = validate_body(self.emotion_request, fields)
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k, model=body.model)
        with self.admitted(context, self.costs.texts(len(body.texts))):
            return await self.services.emotions.detect(context, body.texts, options)

    # -- transcription --

    def _decode_options(self, fields: TranscribeFields) -> DecodeOptions:
        return validate_body(
            DecodeOptions,
            {
                "language": fields.language,
                "task": fields.task,
                "beam_size": fields.beam_size,
                "word_timestamps": fields.word_timestamps,
            },
        )

    @requires(Scope.TRANSCRIPTION)
    @metered("transcribe")
    async def transcribe(self, context: RequestContext, upload: Upload) -> Transcript:
        with self.admitted(context, self.costs.upload()):
            audio = await upload()
            fields = validate_body(TranscribeFields, audio.fields)
            options = self._decode_options(fields)
            return await self.services.transcription.transcribe(context, audio.data, options, fields.model)

    @requires(Scope.TRANSCRIPTION)
    @metered("transcribe")
    async def transcribe_stream(
        self, context: RequestContext, upload: Upload
    ) -> OperationStream[Segment | Transcript]:
        ticket = self.admit(context, self.costs.upload())
        try:
            audio = await upload()
            fields = validate_body(TranscribeFields, audio.fields)
            options = self._decode_options(fields)
        except BaseException:
            ticket.release()
            raise
        items = self.services.transcription.stream(context, audio.data, options, fields.model)
        return await self._streamed(ticket, items)

    @requires(Scope.TRANSCRIPTION)
    @metered("openai_transcription")
    async def openai_transcription(self, context: RequestContext, upload: Upload) -> OpenAIAnswer:
        with self.admitted(context, self.costs.upload()):
            audio = await upload()
            fields = validate_body(OpenAITranscriptionFields, audio.fields)
            granularities = tuple(dict.fromkeys(fields.timestamp_granularities or ("segment",)))
            if fields.timestamp_granularities and fields.response_format != "verbose_json":
                raise invalid_input("timestamp_granularities[]: needs `response_format=verbose_json`")
            options = validate_body(
                DecodeOptions,
                {
                    "language": fields.language,
                    "initial_prompt": fields.prompt,
                    "temperature": fields.temperature,
                    "word_timestamps": "word" in granularities,
                },
            )
            name = None if fields.model in MODEL_ALIASES else fields.model
            transcription = self.services.transcription
            transcript = await transcription.transcribe(context, audio.data, options, name)
        card = transcription.model(transcript.model.name).card
        return openai_answer(
            transcript, fields.response_format, granularities, card.language_name(transcript.language)
        )

    # -- summaries --

    def _summary_request(self, fields: Fields) -> tuple[list[str], SummaryOptions]:
        body = validate_body(self.summary_request, fields)
        return body.texts, SummaryOptions.model_validate(body.model_dump(exclude={"texts"}))

    @requires(Scope.SUMMARIES)
    @metered("summarize")
    async def summarize(self, context: RequestContext, fields: Fields) -> SummaryResult:
        texts, options = self._summary_request(fields)
        with self.admitted(context, self.costs.summaries(len(texts), options)):
            return await self.services.summarization.summarize(context, texts, options)

    @requires(Scope.SUMMARIES)
    @metered("summarize")
    async def summarize_stream(
        self, context: RequestContext, fields: Fields
    ) -> OperationStream[str | SummaryResult]:
        """One text's summary as it is generated (`str` deltas), then the whole result."""
        texts, options = self._summary_request(fields)
        if len(texts) != 1:
            raise invalid_input(f"texts: streaming takes one text, got {len(texts)}")
        ticket = self.admit(context, self.costs.summaries(1, options))
        return await self._streamed(ticket, self.services.summarization.stream(context, texts[0], options))

    # -- journal --

    @requires(Scope.JOURNAL)
    @metered("journal")
    async def journal_stream(
        self, context: RequestContext, entry: Fields | Upload
    ) -> OperationStream[Segment | JournalAnalysis]:
        """An entry's analysis: a text entry (fields) at once, an audio entry (an upload) after its
        transcript's segments as they are decoded."""
        if callable(entry):
            ticket = self.admit(context, self.costs.journal_audio())
            try:
                items = await self._journal_audio(context, entry)
            except BaseException:
                ticket.release()
                raise
            return await self._streamed(ticket, items)
        body = validate_body(self.journal_text_request, entry)
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k)
        ticket = self.admit(context, self.costs.journal_text(body.text))
        text_items = self.services.journal.stream_text(context, body.text, options)
        return await self._streamed(ticket, text_items)

    async def _journal_audio(
        self, context: RequestContext, upload: Upload
    ) -> AsyncIterator[Segment | JournalAnalysis]:
        audio = await upload()
        fields = validate_body(JournalAudioOptions, audio.fields)
        decode = validate_body(DecodeOptions, {"language": fields.language, "beam_size": fields.beam_size})
        options = EmotionOptions(threshold=fields.threshold, top_k=fields.top_k)
        return self.services.journal.stream_audio(context, audio.data, decode, options, fields.model)

    async def journal(self, context: RequestContext, entry: Fields | Upload) -> JournalAnalysis:
        """The entry's analysis alone (the transcript's segments are in it)."""
        stream = await self.journal_stream(context, entry)
        async with contextlib.aclosing(stream.items()) as items:
            async for item in items:
                if isinstance(item, JournalAnalysis):
                    return item
        raise AssertionError("a journal stream ends with its analysis")

    # -- live transcription --

    @contextlib.asynccontextmanager
    async def live_transcription(self, context: RequestContext) -> AsyncIterator[LiveSession]:
        """A live session (gateway/realtime) for the block, admitted at its cost (`costs.live_session`)
        for its whole life; refused with RATE_LIMITED when its tenant's `live_sessions` quota or the
        caller's `realtime_max_sessions_per_key` is full (across replicas), OVERLOADED (429) when the
        budget cannot take it, UNAVAILABLE while draining. Its audio is charged to the caller's limits
        and its tenant's quota as it arrives; each turn is a usage ledger row; its decodes are stopped
        and its slots freed on exit."""
        await admit_caller(context, Scope.LIVE)  # an async context manager: `@requires` cannot wrap it
        access, principal = context.access, context.principal
        slots = access.live_session(principal) if access and principal else contextlib.nullcontext()
        async with slots:
            try:
                ticket = self.admit(context, self.costs.live_session(self.live_options.partial_interval_s))
            except SamoError as error:  # as other operations' admission refusals: a row, no units
                self.meter.record(context, LIVE_OPERATION, error.type.value, Units())
                raise
            with ticket:
                async with self._live_session(context) as session:
                    yield session

    @contextlib.asynccontextmanager
    async def _live_session(self, context: RequestContext) -> AsyncIterator[LiveSession]:
        # The journal at the session's end is admitted as a journal request of its own.
        journal_context = RequestContext(context.request_id, context.principal, context.access)

        async def journal(text: str) -> JournalAnalysis:
            return await self.journal(journal_context, {"text": text})

        def usage(row: LiveUsage) -> None:
            turn = RequestContext(row.row_id, context.principal, context.access)
            units = Units(row.model, row.model_version, audio_seconds=row.audio_seconds)
            self.meter.record(turn, LIVE_OPERATION, row.status, units)

        session = LiveSession(
            self.services.transcription,
            self.live_options,
            context.request_id or "live",
            journal=journal,
            meter_audio=context.meter_live_audio,
            usage=usage,
        )
        try:
            yield session
        finally:
            await session.aclose()
