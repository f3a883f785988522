"""Result objects to and from `samo.v1` messages."""

from __future__ import annotations

from gateway.emotions.service import EmotionOptions, EmotionResult, LabelScore, ModelInfo, TextEmotions
from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.journal.service import JournalAnalysis, SentenceEmotions
from gateway.summarization.service import Summary, SummaryModelInfo, SummaryOptions, SummaryResult
from gateway.transcription.service import Segment, Transcript, TranscriptionModelInfo, Word
from samo.contracts.whisper import DecodeOptions


def text_emotions(text: TextEmotions) -> pb.TextEmotions:
    return pb.TextEmotions(
        labels=[pb.LabelScore(label=s.label, score=s.score) for s in text.labels],
        scores=[pb.LabelScore(label=label, score=score) for label, score in text.scores.items()],
        truncated=text.truncated,
        tokens=text.tokens,
    )


def model_info(model: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        kind=model.kind,
        source=model.source,
        description=model.description,
    )


def emotion_response(result: EmotionResult) -> pb.DetectEmotionsResponse:
    return pb.DetectEmotionsResponse(
        model=model_info(result.model),
        results=[text_emotions(text) for text in result.results],
        options=pb.EmotionOptions(threshold=result.options.threshold, top_k=result.options.top_k),
    )


def text_emotions_result(text: pb.TextEmotions) -> TextEmotions:
    return TextEmotions(
        labels=tuple(LabelScore(s.label, s.score) for s in text.labels),
        scores={s.label: s.score for s in text.scores},
        truncated=text.truncated,
        tokens=text.tokens,
    )


def model_info_result(model: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(model.name, model.version, model.kind, model.source, model.description)


def emotion_result(message: pb.DetectEmotionsResponse) -> EmotionResult:
    options = message.options
    return EmotionResult(
        results=tuple(text_emotions_result(text) for text in message.results),
        model=model_info_result(message.model),
        options=EmotionOptions(
            threshold=options.threshold if options.HasField("threshold") else None,
            top_k=options.top_k if options.HasField("top_k") else None,
        ),
    )


def segment_message(s: Segment) -> pb.TranscriptSegment:
    return pb.TranscriptSegment(
        start=s.start,
        end=s.end,
        text=s.text,
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
        words=[pb.Word(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in s.words],
    )


def segment_result(s: pb.TranscriptSegment) -> Segment:
    return Segment(
        s.start,
        s.end,
        s.text,
        s.avg_logprob,
        s.no_speech_prob,
        tuple(Word(w.start, w.end, w.word, w.probability) for w in s.words),
    )


def transcribe_response(transcript: Transcript) -> pb.TranscribeResponse:
    model = transcript.model
    return pb.TranscribeResponse(
        text=transcript.text,
        segments=[segment_message(s) for s in transcript.segments],
        duration=transcript.duration,
        language=transcript.language,
        language_probability=transcript.language_probability,
        model=pb.TranscriptionModelInfo(
            name=model.name, version=model.version, backend=model.backend, source=model.source
        ),
    )


def transcript(message: pb.TranscribeResponse, options: DecodeOptions) -> Transcript:
    model = message.model
    return Transcript(
        text=message.text,
        segments=tuple(segment_result(s) for s in message.segments),
        duration=message.duration,
        language=message.language,
        language_probability=message.language_probability,
        model=TranscriptionModelInfo(model.name, model.version, model.backend, model.source),
        options=options,
    )


def journal_message(analysis: JournalAnalysis) -> pb.JournalAnalysis:
    message = pb.JournalAnalysis(
        source="audio" if analysis.transcript else "text",
        text=analysis.text,
        sentences=[
            pb.SentenceEmotions(text=s.text, emotions=text_emotions(s.emotions)) for s in analysis.sentences
        ],
    )
    if analysis.transcript:
        message.transcript.CopyFrom(transcribe_response(analysis.transcript))
    if analysis.emotions:
        message.emotions.CopyFrom(text_emotions(analysis.emotions.results[0]))
        message.emotion_model.CopyFrom(model_info(analysis.emotions.model))
    if analysis.summary:
        message.summary.CopyFrom(summary_message(analysis.summary.results[0], analysis.summary.model))
        message.summarization_model.CopyFrom(summary_model(analysis.summary.model))
    return message


def summary_message(summary: Summary, model: SummaryModelInfo) -> pb.Summary:
    return pb.Summary(
        summary=summary.text,
        method=model.method,
        sentences=list(summary.sentences),
        sentence_count=summary.sentence_count,
        truncated=summary.truncated,
        tokens=summary.tokens,
        chunks=summary.chunks,
    )


def summary_from_message(message: pb.Summary) -> Summary:
    tokens = message.tokens if message.HasField("tokens") else None
    return Summary(
        message.summary,
        tuple(message.sentences),
        message.sentence_count,
        message.truncated,
        tokens,
        message.chunks,
    )


def summary_model(model: SummaryModelInfo) -> pb.SummaryModelInfo:
    return pb.SummaryModelInfo(
        name=model.name, method=model.method, version=model.version, source=model.source
    )


def summarize_response(result: SummaryResult) -> pb.SummarizeResponse:
    return pb.SummarizeResponse(
        model=summary_model(result.model), results=[summary_message(s, result.model) for s in result.results]
    )


def summary_result(message: pb.SummarizeResponse, options: SummaryOptions) -> SummaryResult:
    model = message.model
    return SummaryResult(
        results=tuple(summary_from_message(s) for s in message.results),
        model=SummaryModelInfo(model.name, model.method, model.version, model.source),
        options=options,
    )


def journal_result(
    message: pb.JournalAnalysis, emotion: EmotionOptions, decode: DecodeOptions
) -> JournalAnalysis:
    """The inverse of `journal_message`, for clients; options are the ones the client sent."""
    summary = None
    if message.HasField("summary"):
        summary = SummaryResult(
            results=(summary_from_message(message.summary),),
            model=SummaryModelInfo(
                message.summarization_model.name,
                message.summarization_model.method,
                message.summarization_model.version,
                message.summarization_model.source,
            ),
            options=SummaryOptions(),
        )
    emotions = None
    if message.HasField("emotions"):
        emotions = EmotionResult(
            results=(text_emotions_result(message.emotions),),
            model=model_info_result(message.emotion_model),
            options=emotion,
        )
    return JournalAnalysis(
        text=message.text,
        emotions=emotions,
        sentences=tuple(
            SentenceEmotions(s.text, text_emotions_result(s.emotions)) for s in message.sentences
        ),
        summary=summary,
        transcript=transcript(message.transcript, decode) if message.HasField("transcript") else None,
    )
