"""Analyzing one journal entry: emotions for the entry and per sentence, and its summary, computed
concurrently over the other services; audio entries are transcribed first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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
from samo.contracts.text import ENCODER_MAX_BATCH_SIZE
from samo.contracts.whisper import DecodeOptions

MAX_SENTENCES_PER_CALL = ENCODER_MAX_BATCH_SIZE  # the emotion model's max_batch_size


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
