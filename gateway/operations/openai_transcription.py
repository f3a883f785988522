"""OpenAI's audio transcription answer (`response_format`) from a `Transcript`: JSON, verbose JSON with
segments and/or words, plain text, SRT or WebVTT. Part of the operation, so a batch line asking for
`/v1/audio/transcriptions` gets what the HTTP route sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.results import (
    OpenAISegment,
    OpenAITranscription,
    OpenAIVerboseTranscription,
    OpenAIWord,
    Transcript,
)

MODEL_ALIASES = frozenset({"whisper-1"})
"""Model names OpenAI clients send that mean the default Whisper model."""
ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]


@dataclass(frozen=True)
class OpenAIAnswer:
    """The answer in the format asked for: a JSON model, or text with its media type."""

    body: OpenAITranscription | OpenAIVerboseTranscription | str
    media_type: str
    transcript: Transcript


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{milliseconds:03d}"


def subtitles(transcript: Transcript, kind: Literal["srt", "vtt"]) -> str:
    separator = "," if kind == "srt" else "."
    blocks = [
        f"{index}\n{_timestamp(s.start, separator)} --> {_timestamp(s.end, separator)}\n{s.text}\n"
        if kind == "srt"
        else f"{_timestamp(s.start, separator)} --> {_timestamp(s.end, separator)}\n{s.text}\n"
        for index, s in enumerate(transcript.segments, start=1)
    ]
    header = "WEBVTT\n\n" if kind == "vtt" else ""
    return header + "\n".join(blocks)


def verbose(
    transcript: Transcript, language: str, granularities: tuple[Granularity, ...] = ("segment",)
) -> OpenAIVerboseTranscription:
    """OpenAI's `verbose_json`: the language by name, segments and/or words, as asked for."""
    words = tuple(
        OpenAIWord(word=w.word.strip(), start=w.start, end=w.end)
        for s in transcript.segments
        for w in s.words
    )
    segments = tuple(
        OpenAISegment(
            id=index,
            start=s.start,
            end=s.end,
            text=s.text,
            temperature=transcript.options.temperature,
            avg_logprob=s.avg_logprob,
            no_speech_prob=s.no_speech_prob,
        )
        for index, s in enumerate(transcript.segments)
    )
    return OpenAIVerboseTranscription(
        task=transcript.options.task,
        language=language,
        duration=transcript.duration,
        text=transcript.text,
        words=words if "word" in granularities else None,
        segments=segments if "segment" in granularities else None,
    )


def openai_answer(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: tuple[Granularity, ...],
    language_name: str,
) -> OpenAIAnswer:
    if response_format == "text":
        return OpenAIAnswer(transcript.text, "text/plain", transcript)
    if response_format in ("srt", "vtt"):
        media = "text/vtt" if response_format == "vtt" else "text/plain"
        return OpenAIAnswer(subtitles(transcript, response_format), media, transcript)
    if response_format == "verbose_json":
        return OpenAIAnswer(verbose(transcript, language_name, granularities), "application/json", transcript)
    return OpenAIAnswer(OpenAITranscription(text=transcript.text), "application/json", transcript)
