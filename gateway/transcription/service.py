"""The transcription service: decode audio block by block, cut it into windows at pauses, send the
windows through Triton a bounded number at a time, and hand segments out in order.

Memory does not grow with the recording's length: the decoder yields 10 s blocks
(`gateway.audio.decode`), the planner keeps about 90 s of audio (`planner`), and at most
`windows_in_flight` windows (30 s each, with their repairs) are in Triton at once; only segments are
kept. Decoding waits while every slot is taken, so a long file is read at the pace Triton decodes it.

The audio is charged to the request through its context (gateway/context.py: work units and their
deadline, `gateway.admission`; the caller's audio rate limit, `gateway.security`) before it goes to
Triton: the declared duration when the file is
opened, and whatever decoding finds beyond it (a live WebM declares none) as it is found. The stream
stops when the request's deadline (`gateway.deadlines`, grown by those charges) passes or its caller
goes away (the HTTP client disconnects, the gRPC call is cancelled): windows in flight are cancelled
(their Triton calls with them) and decoding stops at the next packet.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from gateway.admission import WHISPER_WINDOW_S
from gateway.audio.limits import AudioLimits
from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError, invalid_input
from gateway.observability.metrics import record_audio, record_whisper_windows
from gateway.observability.tracing import stage
from gateway.repository import pick_model
from gateway.results import Segment, Transcript, TranscriptionModelInfo
from gateway.transcription.coverage import overlaps, uncovered
from gateway.transcription.model import WhisperModel
from gateway.transcription.planner import Window, WindowPlanner
from gateway.triton_client import InferenceCalls
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

T = TypeVar("T")


class AudioSource(Protocol):
    """Audio to transcribe, block by block: a file being decoded (`gateway.audio.decode.AudioReader`)
    or samples already decoded."""

    declared_s: float | None

    def blocks(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class _Samples:
    """Samples already at 16 kHz as an `AudioSource`: their length is known, their blocks are views."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
        self.declared_s: float | None = samples.size / SAMPLE_RATE

    def blocks(self) -> Iterator[np.ndarray]:
        step = 10 * SAMPLE_RATE
        for start in range(0, self.samples.size, step):
            yield self.samples[start : start + step]

    def close(self) -> None:
        pass


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


@dataclass(frozen=True)
class _Payloads:
    """The options each Triton request of a file carries: a window's, with its speech; a repair's."""

    options: DecodeOptions
    repair: bytes

    def window(self, window: Window) -> bytes:
        if self.options.without_timestamps:  # the backend's second decode starts at a gap's timestamp
            return self.options.model_dump_json().encode()
        speech = tuple(
            (round((a - window.start) / SAMPLE_RATE, 3), round((b - window.start) / SAMPLE_RATE, 3))
            for a, b in window.speech
        )
        return self.options.model_copy(update={"speech": speech}).model_dump_json().encode()


class _AudioCharges:
    """What the request has been charged for its audio so far: `up_to` charges the rest of a duration."""

    def __init__(self, context: RequestContext) -> None:
        self.context = context
        self.seconds = 0.0
        self._units_seconds = 0.0  # admission: every upload was admitted with one window already

    async def up_to(self, seconds: float) -> None:
        if seconds <= self.seconds:
            return
        # `hold_audio(d)` holds the units of d seconds past the window the request was admitted with.
        if not self._units_seconds:
            self.context.hold_audio(seconds)
            self._units_seconds = max(seconds, WHISPER_WINDOW_S)
        elif seconds > self._units_seconds:
            self.context.hold_audio(WHISPER_WINDOW_S + seconds - self._units_seconds)
            self._units_seconds = seconds
        await self.context.meter_audio(seconds - self.seconds)
        self.seconds = seconds


class TranscriptionService:
    def __init__(
        self,
        triton: InferenceCalls,
        models: Mapping[str, WhisperModel],
        default_model: str,
        limits: AudioLimits,
        windows_in_flight: int = 4,
    ) -> None:
        self.triton = triton
        self.models = dict(models)
        self.default_model = default_model
        self.limits = limits
        self.windows_in_flight = windows_in_flight

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
        if options.prefix and (card.backend != "ctranslate2" or not options.without_timestamps):
            raise invalid_input(
                f"prefix: model `{model.name}` ({card.backend} backend) takes a forced prefix only "
                "without timestamps, on a CTranslate2 model"
            )
        if options.window_s is not None and card.backend != "ctranslate2":
            raise invalid_input(
                f"window_s: model `{model.name}` ({card.backend} backend) encodes whole 30 s windows "
                "only; a shorter encoder window needs a CTranslate2 model"
            )
        if options.word_timestamps and not card.word_timestamps:
            raise invalid_input(
                f"word_timestamps: model `{model.name}` ({card.backend} backend) does not compute word "
                "timestamps; use a CTranslate2 model"
            )

    async def stream(
        self, context: RequestContext, data: bytes, options: DecodeOptions, model_name: str | None = None
    ) -> AsyncIterator[Segment | Transcript]:
        """Segments in order as their windows finish decoding, then the whole `Transcript`.

        Windows go to Triton as the audio is decoded, up to `windows_in_flight` at once (so they share
        batches); speech a window's segments leave out is decoded again (`coverage`), and a segment is
        yielded as soon as its window, its repairs and every earlier window are done.
        """
        # PyAV loads with the first audio request: a gateway that serves text models only starts without it.
        from gateway.audio.decode import open_audio

        model = self.model(model_name)
        self.check_options(model, options)
        reader = await asyncio.to_thread(open_audio, data, self.limits, threading.Event())
        async for item in self._stream(context, reader, model, options):
            yield item

    async def transcribe_samples(
        self,
        context: RequestContext,
        samples: np.ndarray,
        options: DecodeOptions,
        model_name: str | None = None,
    ) -> Transcript:
        """Audio already decoded (16 kHz float32, a live session's turn), transcribed as a file is:
        windows at pauses, and the speech a window's segments leave out decoded again."""
        model = self.model(model_name)
        self.check_options(model, options)
        transcript = None
        async for item in self._stream(context, _Samples(samples), model, options):
            if isinstance(item, Transcript):
                transcript = item
        assert transcript is not None, "_stream() always ends with the transcript"
        return transcript

    async def decode_window(
        self,
        context: RequestContext,
        samples: np.ndarray,
        options: DecodeOptions,
        model_name: str | None = None,
    ) -> WindowTranscript:
        """One Whisper window (at most 30 s) as Triton decodes it, without windows or repairs: a live
        session's partial decode, revised by the next one."""
        model = self.model(model_name)
        self.check_options(model, options)
        return await self._window(context, model.name, samples, options.model_dump_json().encode())

    async def _stream(
        self, context: RequestContext, reader: AudioSource, model: WhisperModel, options: DecodeOptions
    ) -> AsyncIterator[Segment | Transcript]:
        payloads = _Payloads(
            options,
            # A repair is one segment over its whole span: without timestamps Whisper has no
            # segment end to stop at, so it cannot leave the tail out again.
            options.model_copy(update={"without_timestamps": True}).model_dump_json().encode(),
        )
        planner = WindowPlanner()
        ready: asyncio.Queue[asyncio.Task[_DecodedWindow] | Exception | None] = asyncio.Queue()
        in_flight: set[asyncio.Task[_DecodedWindow]] = set()
        producer = asyncio.create_task(
            self._send_windows(context, reader, planner, model.name, payloads, ready, in_flight)
        )
        segments: list[Segment] = []
        first: WindowTranscript | None = None
        try:
            while (item := await _within_deadline(context, ready.get())) is not None:
                if isinstance(item, Exception):
                    raise item
                decoded = await _within_deadline(context, item)
                in_flight.discard(item)
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
            producer.cancel()
            for task in in_flight:
                task.cancel()
            # Waits for the packet being decoded, if any: in a thread, so the event loop never does.
            try:
                asyncio.get_running_loop().run_in_executor(None, reader.close)
            except RuntimeError:  # the loop is shutting down: no decoding can be running any more
                reader.close()
        record_audio(model.name, planner.size / SAMPLE_RATE)
        card = model.card
        yield Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(planner.size / SAMPLE_RATE, 3),
            language=options.language or (first.language if first else card.languages[0]),
            language_probability=1.0 if options.language or not first else first.language_probability,
            model=TranscriptionModelInfo(
                name=model.name, version=model.version, backend=card.backend, source=card.source
            ),
            options=options,
        )

    async def _send_windows(
        self,
        context: RequestContext,
        reader: AudioSource,
        planner: WindowPlanner,
        model: str,
        payloads: _Payloads,
        ready: asyncio.Queue[asyncio.Task[_DecodedWindow] | Exception | None],
        in_flight: set[asyncio.Task[_DecodedWindow]],
    ) -> None:
        """Decode, plan and send windows, each once a slot is free and its audio is charged; then put
        `None`, or the error that stopped it."""
        slots = asyncio.Semaphore(self.windows_in_flight)
        charges = _AudioCharges(context)
        blocks = reader.blocks()
        try:
            if reader.declared_s is not None:
                await charges.up_to(reader.declared_s)
            while True:
                with stage("audio.decode"):
                    block = await asyncio.to_thread(next, blocks, None)
                with stage("audio.vad"):  # the planner finds speech in each block as it comes
                    if block is None:
                        windows = await asyncio.to_thread(planner.finish)
                    else:
                        windows = await asyncio.to_thread(planner.add, block)
                # Every block, speech or not: the deadline follows the decoding work, so a long silent
                # file without a declared length reaches its 413 before its deadline.
                await charges.up_to(planner.size / SAMPLE_RATE)
                for window in windows:
                    await slots.acquire()
                    task = asyncio.create_task(self._covered_window(context, model, window, payloads))
                    task.add_done_callback(lambda _: slots.release())
                    in_flight.add(task)
                    ready.put_nowait(task)
                if block is None:
                    break
        except Exception as error:  # the file refused while decoding, a charge refused, the VAD failed
            ready.put_nowait(error)
            return
        ready.put_nowait(None)

    async def _covered_window(
        self, context: RequestContext, model: str, window: Window, payloads: _Payloads
    ) -> _DecodedWindow:
        """One window decoded (its speech sent along: a backend that can decodes what its segments
        leave out again from the same encoder output), then the speech still left out decoded again as
        windows of its own, all placed in order."""
        start, end, speech = window.start, window.end, list(window.speech)
        record_whisper_windows(model, "window")
        transcript = await self._window(context, model, window.samples, payloads.window(window))
        placed = _place(transcript, start, end, speech)
        repairs = uncovered(speech, [(p.start, p.end) for p in placed], start, end)
        if repairs:
            record_whisper_windows(model, "repair", len(repairs))
            repaired = await asyncio.gather(
                *(
                    self._window(context, model, window.samples[a - start : b - start], payloads.repair)
                    for a, b in repairs
                )
            )
            for (a, b), result in zip(repairs, repaired, strict=True):
                placed.extend(_place(result, a, b, speech))
            placed.sort(key=lambda item: (item.start, item.end))
        return _DecodedWindow(transcript, tuple(placed))

    async def transcribe(
        self, context: RequestContext, data: bytes, options: DecodeOptions, model_name: str | None = None
    ) -> Transcript:
        transcript = None
        async for item in self.stream(context, data, options, model_name):
            if isinstance(item, Transcript):
                transcript = item
        assert transcript is not None, "stream() always ends with the transcript"
        return transcript

    async def probe(self, context: RequestContext, model_name: str | None = None) -> None:
        """A real inference on a short silent window (model health; the default model if none named)."""
        model = self.model(model_name)
        silence = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
        options = DecodeOptions(beam_size=1).model_dump_json().encode()
        await self._window(context, model.name, silence, options)

    async def _window(
        self, context: RequestContext, model: str, samples: np.ndarray, options: bytes
    ) -> WindowTranscript:
        if samples.size == 0:
            return WindowTranscript(language="en", language_probability=0.0, segments=())
        outputs = await self.triton.infer(
            context,
            model,
            {
                AUDIO: np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
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


async def _within_deadline(context: RequestContext, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or DEADLINE_EXCEEDED (504) once the request's deadline passes; the deadline
    grows as audio is charged, so it is read again whenever the wait times out. Outside a request, no
    deadline (each Triton call has its own timeout)."""
    future = asyncio.ensure_future(awaitable)
    try:
        while not future.done():
            left = context.time_left(math.inf)  # raises once the deadline has passed
            await asyncio.wait({future}, timeout=None if math.isinf(left) else left)
        return future.result()
    finally:
        future.cancel()
