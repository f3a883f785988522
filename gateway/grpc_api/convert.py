"""The result types (`gateway.results`) to and from `samo.v1` messages, in one place.

Messages carry no options: a client passes the ones it sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, get_args, overload

from google.protobuf.message import Message
from pydantic import BaseModel

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.results import (
    EmotionOptions,
    EmotionResult,
    JournalAnalysis,
    JournalModels,
    JournalSource,
    LabelScore,
    ModelInfo,
    Result,
    Segment,
    SentenceEmotions,
    Summary,
    SummaryModelInfo,
    SummaryOptions,
    SummaryResult,
    TextEmotions,
    Transcript,
    TranscriptionModelInfo,
)
from samo.contracts.whisper import DecodeOptions, Word

R = TypeVar("R", bound=BaseModel)
M = TypeVar("M", bound=Message)

JOURNAL_SOURCES: tuple[JournalSource, ...] = get_args(JournalSource)


@overload
def _message(result: BaseModel, message: type[M]) -> M: ...
@overload
def _message(result: BaseModel | None, message: type[M]) -> M | None: ...
def _message(result: BaseModel | None, message: type[M]) -> M | None:
    """A message whose fields are the result's, by name (scalars, optional and repeated scalars)."""
    return None if result is None else message(**result.model_dump(by_alias=True))


def _result(message: Message, result: type[R], **fields: Any) -> R:
    """The inverse of `_message`; nested messages come converted in `fields`."""
    values: dict[str, Any] = {}
    for f in message.DESCRIPTOR.fields:
        if f.message_type is None:
            value = getattr(message, f.name)
            unset = f.has_presence and not message.HasField(f.name)
            values[f.name] = None if unset else list(value) if f.is_repeated else value
    return result.model_validate(values | fields)


# To messages, for the servicer


def text_emotions_message(text: TextEmotions) -> pb.TextEmotions:
    return pb.TextEmotions(
        labels=[pb.LabelScore(label=s.label, score=s.score) for s in text.labels],
        scores=[pb.LabelScore(label=label, score=score) for label, score in text.scores.items()],
        truncated=text.truncated,
        tokens=text.tokens,
    )


def emotion_response(result: EmotionResult) -> pb.DetectEmotionsResponse:
    return pb.DetectEmotionsResponse(
        model=_message(result.model, pb.ModelInfo),
        results=[text_emotions_message(text) for text in result.results],
        options=_message(result.options, pb.EmotionOptions),
    )


def segment_message(segment: Segment) -> pb.TranscriptSegment:
    return pb.TranscriptSegment(
        **segment.model_dump(exclude={"words"}), words=[_message(w, pb.Word) for w in segment.words]
    )


def transcribe_response(transcript: Transcript) -> pb.TranscribeResponse:
    return pb.TranscribeResponse(
        **transcript.model_dump(exclude={"segments", "model"}),
        segments=[segment_message(s) for s in transcript.segments],
        model=_message(transcript.model, pb.TranscriptionModelInfo),
    )


def summarize_response(result: SummaryResult) -> pb.SummarizeResponse:
    return pb.SummarizeResponse(
        model=_message(result.model, pb.SummaryModelInfo),
        results=[_message(s, pb.Summary) for s in result.results],
    )


def journal_message(analysis: JournalAnalysis) -> pb.JournalAnalysis:
    return pb.JournalAnalysis(
        source=analysis.source,
        text=analysis.text,
        transcript=None if analysis.transcript is None else transcribe_response(analysis.transcript),
        emotions=None if analysis.emotions is None else text_emotions_message(analysis.emotions),
        sentences=[
            pb.SentenceEmotions(text=s.text, emotions=text_emotions_message(s.emotions))
            for s in analysis.sentences
        ],
        summary=_message(analysis.summary, pb.Summary),
        emotion_model=_message(analysis.models.emotion, pb.ModelInfo),
        summarization_model=_message(analysis.models.summarization, pb.SummaryModelInfo),
    )


# From messages, for the client


def text_emotions(message: pb.TextEmotions) -> TextEmotions:
    return _result(
        message,
        TextEmotions,
        labels=tuple(_result(s, LabelScore) for s in message.labels),
        scores={s.label: s.score for s in message.scores},
    )


def emotion_result(message: pb.DetectEmotionsResponse, options: EmotionOptions) -> EmotionResult:
    return EmotionResult(
        model=_result(message.model, ModelInfo),
        results=tuple(text_emotions(text) for text in message.results),
        options=options,
    )


def segment(message: pb.TranscriptSegment) -> Segment:
    return _result(message, Segment, words=tuple(_result(w, Word) for w in message.words))


def transcript(message: pb.TranscribeResponse, options: DecodeOptions) -> Transcript:
    return _result(
        message,
        Transcript,
        segments=tuple(segment(s) for s in message.segments),
        model=_result(message.model, TranscriptionModelInfo),
        options=options,
    )


def summary_result(message: pb.SummarizeResponse, options: SummaryOptions) -> SummaryResult:
    return SummaryResult(
        model=_result(message.model, SummaryModelInfo),
        results=tuple(_result(s, Summary) for s in message.results),
        options=options,
    )


def _journal_source(source: str) -> JournalSource:
    if source in JOURNAL_SOURCES:
        return source
    raise ValueError(f"source: `{source}` is not one of {', '.join(JOURNAL_SOURCES)}")


def journal_analysis(message: pb.JournalAnalysis, decode: DecodeOptions) -> JournalAnalysis:
    def part(name: str, convert: Callable[[Any], Result]) -> Any:
        return convert(getattr(message, name)) if message.HasField(name) else None

    return JournalAnalysis(
        source=_journal_source(message.source),
        text=message.text,
        transcript=part("transcript", lambda m: transcript(m, decode)),
        emotions=part("emotions", text_emotions),
        sentences=tuple(
            SentenceEmotions(text=s.text, emotions=text_emotions(s.emotions)) for s in message.sentences
        ),
        summary=part("summary", lambda m: _result(m, Summary)),
        models=JournalModels(
            emotion=part("emotion_model", lambda m: _result(m, ModelInfo)),
            summarization=part("summarization_model", lambda m: _result(m, SummaryModelInfo)),
            transcription=part("transcript", lambda m: _result(m.model, TranscriptionModelInfo)),
        ),
    )
