"""Analyzing one journal entry: emotions for the entry and per sentence, and its summary, computed
concurrently over the other services; audio entries are transcribed first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.context import RequestContext
from gateway.emotions.service import EmotionService
from gateway.errors import invalid_input
from gateway.results import (
    EmotionOptions,
    JournalAnalysis,
    JournalModels,
    Segment,
    SentenceEmotions,
    SummaryOptions,
    Transcript,
)
from gateway.summarization.sentences import split_sentences
from gateway.summarization.service import SummarizationService
from gateway.transcription.service import TranscriptionService
from samo.contracts.whisper import DecodeOptions


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
        self,
        context: RequestContext,
        text: str,
        options: EmotionOptions = EmotionOptions(),
        transcript: Transcript | None = None,
    ) -> JournalAnalysis:
        source = "text" if transcript is None else "audio"
        transcription = None if transcript is None else transcript.model
        if not text.strip():
            if transcript is None:
                raise invalid_input("text: the entry is empty or whitespace only")
            return JournalAnalysis(
                source=source,
                text="",
                transcript=transcript,
                emotions=None,
                sentences=(),
                summary=None,
                models=JournalModels(emotion=None, summarization=None, transcription=transcription),
            )
        sentences = split_sentences(text)
        whole, summary, by_sentence = await asyncio.gather(
            self.emotions.detect(context, [text], options),
            self.summarization.summarize(context, [text], SummaryOptions()),
            self.emotions.detect(context, sentences, options),
        )
        per_sentence = by_sentence.results
        return JournalAnalysis(
            source=source,
            text=text,
            transcript=transcript,
            emotions=whole.results[0],
            sentences=tuple(
                SentenceEmotions(text=s, emotions=e) for s, e in zip(sentences, per_sentence, strict=True)
            ),
            summary=summary.results[0],
            models=JournalModels(
                emotion=whole.model, summarization=summary.model, transcription=transcription
            ),
        )

    async def stream_text(
        self, context: RequestContext, text: str, options: EmotionOptions = EmotionOptions()
    ) -> AsyncIterator[JournalAnalysis]:
        """`analyze_text` in the shape of `stream_audio`, so the fronts treat both entries alike."""
        yield await self.analyze_text(context, text, options)

    async def stream_audio(
        self,
        context: RequestContext,
        data: bytes,
        decode: DecodeOptions,
        options: EmotionOptions = EmotionOptions(),
        model: str | None = None,
    ) -> AsyncIterator[Segment | JournalAnalysis]:
        """Transcript segments as they are decoded, then the analysis of the whole entry."""
        async for item in self.transcription.stream(context, data, decode, model):
            if isinstance(item, Transcript):
                yield await self.analyze_text(context, item.text, options, transcript=item)
            else:
                yield item
