"""One live transcription session, whichever transport carries it: client events in, server events out.

Audio goes through the streaming VAD as it arrives; with `server_vad` a turn opens where speech starts
(less the prefix padding) and is committed after `silence_duration_ms` of silence; without it, the
client commits. While a turn is open, a partial decode of the turn so far goes to Triton every
`partial_interval_s` (one at a time per session; a decode still running when the next is due means
the next is skipped, so a session that cannot keep up decodes less often rather than later), and
LocalAgreement-2 (`agreement`) confirms words as `delta` events. A committed turn is decoded once more,
as a file is (`TranscriptionService.transcribe_samples`: windows at pauses, and speech a window's
segments leave out decoded again), and its remaining words are confirmed before `completed`. A commit
cancels the partial in flight, and no partial starts while a final decode is pending: finals never
wait behind partials in the gateway (a partial Triton is already computing still finishes there first).
`completed` events go out in turn order. Every decode is prompted with the session's last words.

Every decode is an ordinary Triton request through the transcription service, so live sessions batch
with each other and with file transcriptions. The session's admission (its work units, held for its
whole life) is its operation's (gateway/operations); this module holds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.observability.metrics import LIVE_SESSIONS, record_live_decodes
from gateway.realtime.agreement import Agreement, joined
from gateway.realtime.audio import SessionAudio
from gateway.realtime.events import (
    Append,
    BadEvent,
    BetaSessionUpdate,
    BetaSessionUpdated,
    Clear,
    Cleared,
    ClientEvent,
    Close,
    Commit,
    Committed,
    Completed,
    Delta,
    DurationUsage,
    ErrorDetail,
    JournalCompleted,
    LiveConfig,
    Partial,
    ServerEvent,
    SessionClosed,
    SessionCreated,
    SessionUpdate,
    SpeechStarted,
    SpeechStopped,
    TranscriptionFailed,
    new_id,
)
from gateway.realtime.pcm import ToWhisperRate, pcm16
from gateway.realtime.turns import FRAME, SpeechStart, SpeechStop, StreamingVad, TurnDetector
from gateway.results import JournalAnalysis
from gateway.transcription.service import LOW_LOGPROB, NO_SPEECH_PROB, TranscriptionService
from samo.contracts.whisper import SAMPLE_RATE, WINDOW_SAMPLES, DecodeOptions

logger = logging.getLogger(__name__)

MIN_COMMIT = SAMPLE_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio."""
MIN_PARTIAL = SAMPLE_RATE
"""A turn is first decoded once it holds a second of audio: less gives Whisper little but padding."""
PARTIAL_WINDOW = WINDOW_SAMPLES - 2 * SAMPLE_RATE
"""A turn longer than a window is decoded partially over its last 28 s; its final decode takes all of it."""
TRAILING_PAD = 2 * SAMPLE_RATE // 5
"""A turn that the VAD ended is decoded up to 400 ms after its last speech frame, not through the whole
`silence_duration_ms`: the VAD heard silence there, and Whisper tiny decodes short clips worse with a
second of silence after them ("ask not" came back "Ask, knock!")."""
PROMPT_WORDS = 40
"""Words of the session's completed turns given to each decode as its prompt."""
MAX_TURN = 300 * SAMPLE_RATE
"""A turn that reaches 5 minutes (speech without a pause, or no commit) is committed there."""
PARTIAL_TICK_S = 0.05
"""How often a session looks whether a partial decode is due."""
FLOOD_WINDOW_S = 10.0
SPEEDUP_ALLOWANCE_S = 10.0
OPENAI_MODEL_PREFIXES = ("whisper-1", "gpt-")
"""Model names of OpenAI's that mean the default Whisper model."""


@dataclass(frozen=True)
class LiveOptions:
    """What a deployment sets for every live session (`realtime_*` settings)."""

    partial_interval_s: float = 1.0
    partial_beam_size: int = 1
    max_bad_events: int = 20
    max_speedup: float = 8.0


@dataclass(frozen=True)
class LiveUsage:
    """One usage ledger row of a live session: a turn (`row_id` its item ID) with the audio received
    since the row before, or the audio after the session's last turn (`row_id` the session's)."""

    row_id: str
    status: str
    """`ok`, `cancelled` (the session ended before the turn's final decode), or a failure's error type."""
    audio_seconds: float
    model: str
    model_version: str


@dataclass
class _Turn:
    item_id: str
    start: int
    agreement: Agreement = field(default_factory=Agreement)
    heard_speech: bool = False
    decoded_to: int = 0
    """Where the last partial decode ended."""
    closed: bool = False


class LiveSession:
    """Feed it client events with `handle`; read server events from `events` until `None`."""

    def __init__(
        self,
        transcription: TranscriptionService,
        options: LiveOptions,
        request_id: str,
        journal: Callable[[str], Awaitable[JournalAnalysis]] | None = None,
        meter_audio: Callable[[float], Awaitable[None]] | None = None,
        usage: Callable[[LiveUsage], None] | None = None,
    ) -> None:
        self.transcription = transcription
        self.options = options
        self.config = LiveConfig()
        self.events: asyncio.Queue[ServerEvent | None] = asyncio.Queue()
        self.finished = False
        """Set once the client closed the session and everything owed has been sent."""
        self.handled = 0
        """Client events taken (refused ones not counted)."""
        self._journal = journal
        self._meter_audio = meter_audio
        self._unmetered = 0.0  # seconds received and not yet charged to the caller's audio limit
        self._usage = usage
        self._billed_to = 0  # audio position up to which usage rows are written (or owed by a final)
        self.session_id = new_id("sess")
        # Decodes carry no ticket (the session's units are held by its operation) and charge no audio
        # (the transport charges what the client sends, once, not every re-decode of it).
        self._decode_context = RequestContext(request_id=request_id)
        self._audio = SessionAudio()
        self._resample = ToWhisperRate(self.config.rate)
        self._vad = StreamingVad()
        self._vad_at = 0  # position of the next VAD frame
        self._detector: TurnDetector | None = None
        self._turn: _Turn | None = None
        self._previous_item: str | None = None
        self._finals: asyncio.Task[None] | None = None  # the last final decode: each waits for the one before
        self._finals_pending = 0
        self._partial: asyncio.Task[None] | None = None
        self._partials = asyncio.create_task(self._partial_loop())
        self._transcripts: list[str] = []
        self._bad_events: deque[float] = deque()
        self._started = time.monotonic()
        self._apply(self.config)
        LIVE_SESSIONS.inc()
        self._emit(SessionCreated(type="session.created", config=self.config))

    # -- client events --

    async def handle(self, event: ClientEvent) -> None:
        """One client event; a refused one becomes an `error` event and the session goes on."""
        try:
            if isinstance(event, Append):
                await self._append(event)
            elif isinstance(event, SessionUpdate | BetaSessionUpdate):
                self._update(event)
            elif isinstance(event, Commit):
                self._commit_by_client(event)
            elif isinstance(event, Clear):
                self._clear()
            elif isinstance(event, Close):
                await self._close()
        except SamoError as error:
            code = "invalid_value" if error.type is ErrorType.INVALID_INPUT else error.type.value
            self.reject(
                BadEvent(error.message, code=code, param=_param_of(error.message), event_id=event.event_id)
            )
            return
        except BadEvent as bad:
            self.reject(bad)
            return
        self.handled += 1

    def reject(self, bad: BadEvent) -> None:
        """An `error` event for an event the session could not take, counted towards the flood limit."""
        now = time.monotonic()
        self._bad_events.append(now)
        while self._bad_events and self._bad_events[0] < now - FLOOD_WINDOW_S:
            self._bad_events.popleft()
        self._emit(bad.error_event())

    @property
    def flooded(self) -> bool:
        """More invalid events than `max_bad_events` within 10 s: the transport closes the session."""
        return len(self._bad_events) > self.options.max_bad_events

    def _update(self, event: SessionUpdate | BetaSessionUpdate) -> None:
        config = event.session.applied_to(self.config)
        self._check(config)
        self._apply(config)
        if isinstance(event, BetaSessionUpdate):
            self._emit(BetaSessionUpdated(config=config))
        else:
            self._emit(SessionCreated(type="session.updated", config=config))

    def _check(self, config: LiveConfig) -> None:
        """The model, language and prompt as the transcription service takes them (its messages)."""
        self.transcription.check_options(
            self.transcription.model(self._model_name(config)), self._decode_options(config, final=True)
        )

    def _apply(self, config: LiveConfig) -> None:
        if config.rate != self.config.rate:
            self._resample = ToWhisperRate(config.rate)
        if config.turn_detection != self.config.turn_detection or self._detector is None:
            floor = self._audio.end
            self._detector = TurnDetector(config.turn_detection, floor) if config.turn_detection else None
            if self._detector is not None and self._turn is not None:
                self._detector.speaking = True  # the open turn goes on under the new rule
        self.config = config

    async def _append(self, event: Append) -> None:
        samples = self._resample(pcm16(event.audio))
        await self._charge(samples.size / SAMPLE_RATE)
        await self._keep_pace(samples.size)
        if self._detector is None and self._turn is None and samples.size:
            self._open_turn(self._audio.end)  # manual commit: the turn is everything until the client commits
        self._audio.append(samples)
        probabilities = await asyncio.to_thread(self._vad.probabilities, samples)
        threshold = self.config.turn_detection.threshold if self.config.turn_detection else 0.5
        for probability in probabilities:
            at = self._vad_at
            self._vad_at += FRAME
            change = self._detector.frame(at, float(probability)) if self._detector else None
            if isinstance(change, SpeechStart):
                self._open_turn(change.at)
                self._emit(SpeechStarted(audio_start_ms=_ms(change.at), item_id=self._turn_id()))
            elif isinstance(change, SpeechStop) and self._turn is not None:
                self._emit(SpeechStopped(audio_end_ms=_ms(change.at), item_id=self._turn.item_id))
                self._commit(min(change.at, change.speech_end + TRAILING_PAD))
            if probability >= threshold and self._turn is not None:
                self._turn.heard_speech = True
        if self._turn is not None and self._audio.end - self._turn.start >= MAX_TURN:
            self._commit(self._audio.end)
        self._forget_unneeded()

    async def _charge(self, seconds: float) -> None:
        """The caller's audio rate limit counts live audio as it arrives, by whole seconds (the limiter
        rounds each charge up); over the limit, the chunk is refused with an `error` event."""
        if self._meter_audio is None:
            return
        self._unmetered += seconds
        whole = math.floor(self._unmetered)
        if whole >= 1:
            try:
                await self._meter_audio(whole)
            except SamoError:
                self._unmetered -= seconds  # the chunk is refused: not counted later either
                raise
            self._unmetered -= whole

    async def _keep_pace(self, samples: int) -> None:
        """Audio may run ahead of the wall clock by `max_speedup` (plus an allowance): a faster client
        waits, so its events are read later and its decodes stay within what admission counted."""
        allowed = (time.monotonic() - self._started + SPEEDUP_ALLOWANCE_S) * self.options.max_speedup
        ahead = (self._audio.end + samples) / SAMPLE_RATE - allowed
        if ahead > 0:
            await asyncio.sleep(ahead / self.options.max_speedup)

    def _forget_unneeded(self) -> None:
        """Between turns only the prefix padding (and the VAD's frame in progress) is kept."""
        if self._turn is not None:
            self._audio.forget_before(self._turn.start)
        elif self.config.turn_detection is not None:
            keep = self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000 + FRAME
            self._audio.forget_before(self._audio.end - keep)

    def _open_turn(self, start: int) -> None:
        self._turn = _Turn(new_id("item"), start, decoded_to=start)

    def _turn_id(self) -> str:
        assert self._turn is not None
        return self._turn.item_id

    def _commit_by_client(self, event: Commit) -> None:
        turn = self._turn
        if turn is None or self._audio.end - turn.start < MIN_COMMIT:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio."
            )
            raise BadEvent(message, code="input_audio_buffer_commit_empty", event_id=event.event_id)
        self._commit(self._audio.end)

    def _clear(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.closed = True
            self._cancel_partial()
        if self._detector is not None:
            self._detector.end_turn(self._audio.end)
        self._forget_unneeded()
        self._emit(Cleared())

    async def _close(self) -> None:
        """The client ends the session: the open turn is committed, every final awaited, the journal
        analysed if asked; then `session.closed` and the end of the events."""
        if self._turn is not None and self._audio.end - self._turn.start >= MIN_COMMIT:
            self._commit(self._audio.end)
        self._turn = None
        if self._finals is not None:
            await self._finals
        text = " ".join(t for t in self._transcripts if t)
        if self.config.journal and self._journal is not None and text:
            try:
                analysis = await self._journal(text)
            except SamoError as error:
                self._emit(BadEvent(error.message, code=error.type.value, param="samo.journal").error_event())
            else:
                self._emit(JournalCompleted(analysis=analysis))
        self._emit(SessionClosed())
        self.finished = True
        self.events.put_nowait(None)

    # -- turns and decodes --

    def _commit(self, end: int) -> None:
        """The open turn, up to `end`, committed and decoded."""
        turn = self._turn
        assert turn is not None
        self._turn = None
        turn.closed = True
        self._cancel_partial()
        if self._detector is not None and self._detector.speaking:  # a commit by the client
            self._detector.end_turn(end)
        samples = self._audio.read(turn.start, end)
        self._emit(Committed(item_id=turn.item_id, previous_item_id=self._previous_item))
        self._previous_item = turn.item_id
        self._finals_pending += 1
        record_live_decodes("final")
        # The turn's usage row: every second received since the row before (the silence before the turn
        # and after its speech included), so the rows add up to the audio the session received.
        billed = (self._audio.end - self._billed_to) / SAMPLE_RATE
        self._billed_to = self._audio.end
        self._finals = asyncio.create_task(self._final(turn, samples, billed, self._finals))

    def _record(self, row_id: str, status: str, seconds: float, model: tuple[str, str] | None = None) -> None:
        if self._usage is None:
            return
        if model is None:
            try:
                served = self.transcription.model(self._model_name(self.config))
                model = (served.name, served.version)
            except SamoError:  # no such model (any more): the row keeps the audio all the same
                model = (self.config.transcription.model or "", "")
        self._usage(LiveUsage(row_id, status, round(seconds, 3), *model))

    async def _final(
        self, turn: _Turn, samples: np.ndarray, billed_s: float, before: asyncio.Task[None] | None
    ) -> None:
        recorded = False
        try:
            # The turn before first: its words are this decode's prompt, so a final that started while the
            # one before was still decoding (a loaded server, audio sent faster than real time) was
            # prompted differently from the same audio on an idle one (live WER 0.107 against 0.051).
            # Completed events then also go out in turn order.
            if before is not None:
                await before
            try:
                transcript = await self.transcription.transcribe_samples(
                    self._decode_context,
                    samples,
                    self._decode_options(self.config, final=True),
                    self._model_name(self.config),
                )
                failure = None
            except SamoError as error:
                transcript, failure = None, error
            if failure is not None or transcript is None:
                message = failure.message if failure else "transcription failed"
                detail = ErrorDetail(
                    type="server_error", code=failure.type.value if failure else None, message=message
                )
                self._emit(TranscriptionFailed(item_id=turn.item_id, error=detail))
                recorded = True  # a failed turn is not billed: its row carries the error, no units
                self._record(turn.item_id, failure.type.value if failure else "server_error", 0.0)
                return
            had_words = bool(turn.agreement.confirmed)
            rest = turn.agreement.final(transcript.text.split())
            if rest:
                self._emit(Delta(item_id=turn.item_id, delta=joined(rest, after=had_words)))
            text = " ".join(turn.agreement.confirmed)
            self._transcripts.append(text)
            usage = DurationUsage(seconds=round(samples.size / SAMPLE_RATE, 3))
            self._emit(Completed(item_id=turn.item_id, transcript=text, usage=usage))
            recorded = True
            self._record(turn.item_id, "ok", billed_s, (transcript.model.name, transcript.model.version))
        finally:
            self._finals_pending -= 1
            if not recorded:  # cancelled: the session ended before the turn's final decode
                self._record(turn.item_id, "cancelled", billed_s)

    async def _partial_loop(self) -> None:
        """A partial decode of the open turn every `partial_interval_s`, one at a time: one still running
        when the next is due delays it (the session skips decodes rather than queueing them)."""
        last_start = -math.inf
        while True:
            await asyncio.sleep(PARTIAL_TICK_S)
            turn = self._turn
            if (
                turn is None
                or not turn.heard_speech
                or self._finals_pending
                or self._audio.end - turn.start < MIN_PARTIAL
                or self._audio.end <= turn.decoded_to
                or time.monotonic() - last_start < self.options.partial_interval_s
            ):
                continue
            last_start = time.monotonic()
            self._partial = asyncio.create_task(self._decode_partial(turn))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({self._partial})
            took = time.monotonic() - last_start
            record_live_decodes("partial")
            record_live_decodes("skipped", max(0, math.ceil(took / self.options.partial_interval_s) - 1))

    async def _decode_partial(self, turn: _Turn) -> None:
        end = self._audio.end
        start = max(turn.start, end - PARTIAL_WINDOW)
        samples = self._audio.read(start, end)
        turn.decoded_to = end
        try:
            window = await self.transcription.decode_window(
                self._decode_context,
                samples,
                self._decode_options(self.config, final=False),
                self._model_name(self.config),
            )
        except SamoError as error:  # a partial is revisable: the final decode will tell
            logger.info("live partial decode failed (%s); the turn's final decode follows", error.type.value)
            return
        if turn.closed:
            return
        words = " ".join(
            s.text for s in window.segments if not _silent(s.no_speech_prob, s.avg_logprob)
        ).split()
        had_words = bool(turn.agreement.confirmed)
        confirmed, tail = turn.agreement.hypothesis(words, from_start=start == turn.start)
        if confirmed:
            self._emit(Delta(item_id=turn.item_id, delta=joined(confirmed, after=had_words)))
        self._emit(
            Partial(item_id=turn.item_id, confirmed=" ".join(turn.agreement.confirmed), tail=" ".join(tail))
        )

    def _cancel_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()

    def _decode_options(self, config: LiveConfig, *, final: bool) -> DecodeOptions:
        transcription = config.transcription
        # The session's own words so far condition the decoder, as Whisper's long-form decoding conditions
        # each window on the text before it: a turn alone is a short clip with no context.
        previous = " ".join(" ".join(self._transcripts).split()[-PROMPT_WORDS:])
        prompt = " ".join(part for part in (transcription.prompt, previous) if part)
        return DecodeOptions(
            language=transcription.language or None,
            initial_prompt=prompt[-1000:] or None,
            beam_size=5 if final else self.options.partial_beam_size,
            without_timestamps=not final,
        )

    @staticmethod
    def _model_name(config: LiveConfig) -> str | None:
        name = config.transcription.model
        return None if not name or name.startswith(OPENAI_MODEL_PREFIXES) else name

    def _emit(self, event: ServerEvent) -> None:
        self.events.put_nowait(event)

    async def aclose(self) -> None:
        """The session is over: stop every decode still running (their Triton calls with them); the
        audio after the last committed turn gets its usage row."""
        LIVE_SESSIONS.dec()
        tasks = [self._partials, self._partial, self._finals]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, SamoError):
                    await task
        rest = self._audio.end - self._billed_to
        self._billed_to = self._audio.end
        if rest > 0:
            self._record(self.session_id, "ok", rest / SAMPLE_RATE)


def _ms(position: int) -> int:
    return math.floor(position * 1000 / SAMPLE_RATE)


def _silent(no_speech_prob: float, avg_logprob: float) -> bool:
    # Whisper's own rule for silence, as file transcription applies it.
    return no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB


def _param_of(message: str) -> str | None:
    """The field a validation message names (`language: ...`), for the error's `param`."""
    head, separator, _ = message.partition(":")
    return head if separator and " " not in head and len(head) < 64 else None
