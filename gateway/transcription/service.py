"""The transcription service: decode audio, split long audio at pauses, batch windows through Triton."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import numpy as np

from gateway.audio.limits import AudioLimits
from gateway.errors import ErrorType, SamoError, invalid_input
from gateway.repository import pick_model
from gateway.results import Segment, Transcript, TranscriptionModelInfo
from gateway.transcription.coverage import overlaps, uncovered
from gateway.transcription.model import WhisperModel
from gateway.transcription.windows import plan_windows, speech_regions
from gateway.triton_client import TritonClient
from samo.contracts.whisper import (
    AUDIO,
    OPTIONS,
    RESULT,
    SAMPLE_RATE,
    DecodeOptions,
    WindowSegment,
    WindowTranscript,
    Word,
)

# Whisper's own rule for silence: a window it thinks holds no speech and decodes with low confidence.
# It drops a segment only where the VAD hears no speech either.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


@dataclass(frozen=True)
class _Placed:
    """A window's segment placed in the audio: samples from the audio's start."""

    start: int
    end: int
    window_start: int
    segment: WindowSegment


@dataclass(frozen=True)
class _DecodedWindow:
    transcript: WindowTranscript
    placed: tuple[_Placed, ...]
    """The window's segments and its repairs', in order."""


class TranscriptionService:
    def __init__(
        self,
        triton: TritonClient,
        models: Mapping[str, WhisperModel],
        default_model: str,
        limits: AudioLimits,
    ) -> None:
        self.triton = triton
        self.models = dict(models)
        self.default_model = default_model
        self.limits = limits

    def model(self, name: str | None) -> WhisperModel:
        return pick_model(self.models, name or self.default_model, "transcription")

    def check_options(self, model: WhisperModel, options: DecodeOptions) -> None:
        card = model.card
        if options.language and options.language not in card.languages:
            supported = "en only" if not card.multilingual else f"{len(card.languages)} languages"
            raise invalid_input(
                f"language `{options.language}` is not supported by model `{model.name}` ({supported})"
            )
        if options.task == "translate" and not card.multilingual:
            raise invalid_input(f"model `{model.name}` is English-only and cannot translate")
        if options.temperature > 0 and card.backend == "onnx":
            # The shared seq2seq engine does greedy and beam search; it does not sample.
            raise invalid_input(f"model `{model.name}` (ONNX backend) does not sample: use temperature 0")
        if options.word_timestamps and not card.word_timestamps:
            raise invalid_input(
                f"word_timestamps: model `{model.name}` ({card.backend} backend) does not compute word "
                "timestamps; use a CTranslate2 model"
            )

    async def stream(
        self, data: bytes, options: DecodeOptions, model_name: str | None = None
    ) -> AsyncIterator[Segment | Transcript]:
        """Segments in order as their windows finish decoding, then the whole `Transcript`.

        All windows go to Triton at once (so they share batches); speech a window's segments leave
        out is decoded again (`coverage`), and a segment is yielded as soon as its window, its
        repairs and every earlier window are done.
        """
        model = self.model(model_name)
        self.check_options(model, options)
        # PyAV loads with the first audio request: a gateway that serves text models only starts without it.
        from gateway.audio.decode import decode_audio

        audio = await asyncio.to_thread(decode_audio, data, self.limits)
        samples = audio.samples
        speech = await asyncio.to_thread(speech_regions, samples)
        windows = plan_windows(int(samples.size), speech)
        payloads = (
            options.model_dump_json().encode(),
            # A repair is one segment over its whole span: without timestamps Whisper has no
            # segment end to stop at, so it cannot leave the tail out again.
            options.model_copy(update={"without_timestamps": True}).model_dump_json().encode(),
        )
        pending = [
            asyncio.ensure_future(self._covered_window(model.name, samples, window, speech, payloads))
            for window in windows
        ]
        segments: list[Segment] = []
        first: WindowTranscript | None = None
        try:
            for task in pending:
                decoded = await task
                first = first or decoded.transcript
                for placed in decoded.placed:
                    piece = placed.segment
                    begin = max(placed.start / SAMPLE_RATE, segments[-1].end if segments else 0.0)
                    finish = max(placed.end / SAMPLE_RATE, begin)
                    segment = Segment(
                        start=round(begin, 3),
                        end=round(finish, 3),
                        text=piece.text,
                        avg_logprob=piece.avg_logprob,
                        no_speech_prob=piece.no_speech_prob,
                        words=_words(piece.words, placed.window_start / SAMPLE_RATE, begin, finish),
                    )
                    segments.append(segment)
                    yield segment
        finally:
            for task in pending:
                task.cancel()
        card = model.card
        yield Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(audio.duration_s, 3),
            language=options.language or (first.language if first else card.languages[0]),
            language_probability=1.0 if options.language or not first else first.language_probability,
            model=TranscriptionModelInfo(
                name=model.name, version=model.version, backend=card.backend, source=card.source
            ),
            options=options,
        )

    async def _covered_window(
        self,
        model: str,
        samples: np.ndarray,
        window: tuple[int, int],
        speech: list[tuple[int, int]],
        payloads: tuple[bytes, bytes],
    ) -> _DecodedWindow:
        """One window decoded, then the speech its segments leave out decoded again, all placed in order."""
        start, end = window
        transcript = await self._window(model, samples[start:end], payloads[0])
        placed = _place(transcript, start, end, speech)
        repairs = uncovered(speech, [(p.start, p.end) for p in placed], start, end)
        if repairs:
            repaired = await asyncio.gather(
                *(self._window(model, samples[a:b], payloads[1]) for a, b in repairs)
            )
            for (a, b), result in zip(repairs, repaired, strict=True):
                placed.extend(_place(result, a, b, speech))
            placed.sort(key=lambda item: (item.start, item.end))
        return _DecodedWindow(transcript, tuple(placed))

    async def transcribe(
        self, data: bytes, options: DecodeOptions, model_name: str | None = None
    ) -> Transcript:
        transcript = None
        async for item in self.stream(data, options, model_name):
            if isinstance(item, Transcript):
                transcript = item
        assert transcript is not None, "stream() always ends with the transcript"
        return transcript

    async def probe(self) -> None:
        """A real inference on a short silent window of the default model (readiness)."""
        model = self.model(None)
        silence = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
        await self._window(model.name, silence, DecodeOptions(beam_size=1).model_dump_json().encode())

    async def _window(self, model: str, samples: np.ndarray, options: bytes) -> WindowTranscript:
        if samples.size == 0:
            return WindowTranscript(language="en", language_probability=0.0, segments=())
        outputs = await self.triton.infer(
            model,
            {
                AUDIO: samples.reshape(1, -1).astype(np.float32),
                OPTIONS: np.array([[options]], dtype=np.object_),
            },
            [RESULT],
        )
        raw = outputs[RESULT].reshape(-1)[0]
        try:
            return WindowTranscript.model_validate(json.loads(raw))
        except ValueError:
            raise SamoError(
                ErrorType.INTERNAL, f"model `{model}` returned an unreadable transcript"
            ) from None


def _place(
    transcript: WindowTranscript, start: int, end: int, speech: list[tuple[int, int]]
) -> list[_Placed]:
    """A window's segments in audio samples, inside the window, without the ones Whisper calls silence
    where the VAD hears none either."""
    placed = []
    for piece in transcript.segments:
        begin = min(start + round(piece.start * SAMPLE_RATE), end)
        finish = min(max(start + round(piece.end * SAMPLE_RATE), begin), end)
        silent = piece.no_speech_prob > NO_SPEECH_PROB and piece.avg_logprob < LOW_LOGPROB
        if silent and not overlaps((begin, max(finish, begin + 1)), speech):
            continue
        placed.append(_Placed(begin, finish, start, piece))
    return placed


def _words(words: tuple[Word, ...], offset: float, start: float, end: float) -> tuple[Word, ...]:
    """Window-relative words in audio time, in order, inside their segment's [start, end], not overlapping."""
    kept = []
    previous = start
    for word in words:
        begin = min(max(offset + word.start, previous), end)
        finish = min(max(offset + word.end, begin), end)
        kept.append(word.model_copy(update={"start": round(begin, 3), "end": round(finish, 3)}))
        previous = finish
    return tuple(kept)
