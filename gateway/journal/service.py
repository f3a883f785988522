"""Analyzing one journal entry: emotions for the entry and per sentence, and its summary, computed
concurrently over the other services; audio entries are transcribed first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.emotions.service import EmotionOptions, EmotionResult, EmotionService, TextEmotions
from gateway.errors import invalid_input
from gateway.summarization.sentences import split_sentences
from gateway.summarization.service import SummarizationService, SummaryOptions, SummaryResult
from gateway.transcription.service import Segment, Transcript, TranscriptionService
from samo.contracts.whisper import DecodeOptions

MAX_SENTENCES_PER_CALL = 64  # the emotion model's max_batch_size


@dataclass(frozen=True)
class SentenceEmotions:
    text: str
    emotions: TextEmotions


@dataclass(frozen=True)
class JournalAnalysis:
    """Empty analysis (no emotions, no summary) when an audio entry holds no speech."""

    text: str
    emotions: EmotionResult | None
    sentences: tuple[SentenceEmotions, ...]
    summary: SummaryResult | None
    transcript: Transcript | None = None


class JournalService:
    def __init__(
        self,
        emotions: EmotionService,
        summarization: SummarizationService,
        transcription: TranscriptionService,
    ) -> None:
        self.emotions = emotions
        self.summarization = summarization
        self.transcription = transcription

    async def analyze_text(
        self, text: str, options: EmotionOptions = EmotionOptions(), transcript: Transcript | None = None
    ) -> JournalAnalysis:
        if not text.strip():
            if transcript is None:
                raise invalid_input("text: the entry is empty or whitespace only")
            return JournalAnalysis(text="", emotions=None, sentences=(), summary=None, transcript=transcript)
        sentences = split_sentences(text)
        chunks = [
            sentences[i : i + MAX_SENTENCES_PER_CALL]
            for i in range(0, len(sentences), MAX_SENTENCES_PER_CALL)
        ]
        whole, summary, *per_chunk = await asyncio.gather(
            self.emotions.detect([text], options),
            self.summarization.summarize([text], SummaryOptions()),
            *(self.emotions.detect(chunk, options) for chunk in chunks),
        )
        per_sentence = [result for chunk in per_chunk for result in chunk.results]
        return JournalAnalysis(
            text=text,
            emotions=whole,
            sentences=tuple(SentenceEmotions(s, e) for s, e in zip(sentences, per_sentence, strict=True)),
            summary=summary,
            transcript=transcript,
        )

    async def stream_text(
        self, text: str, options: EmotionOptions = EmotionOptions()
    ) -> AsyncIterator[JournalAnalysis]:
        """`analyze_text` in the shape of `stream_audio`, so the fronts treat both entries alike."""
        yield await self.analyze_text(text, options)

    async def stream_audio(
        self,
        data: bytes,
        decode: DecodeOptions,
        options: EmotionOptions = EmotionOptions(),
        model: str | None = None,
    ) -> AsyncIterator[Segment | JournalAnalysis]:
        """Transcript segments as they are decoded, then the analysis of the whole entry."""
        async for item in self.transcription.stream(data, decode, model):
            if isinstance(item, Transcript):
                yield await self.analyze_text(item.text, options, transcript=item)
            else:
                yield item

    async def analyze_audio(
        self,
        data: bytes,
        decode: DecodeOptions,
        options: EmotionOptions = EmotionOptions(),
        model: str | None = None,
    ) -> JournalAnalysis:
        analysis = None
        async for item in self.stream_audio(data, decode, options, model):
            if isinstance(item, JournalAnalysis):
                analysis = item
        assert analysis is not None, "stream_audio() always ends with the analysis"
        return analysis
