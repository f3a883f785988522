"""One live transcription session, whichever transport carries it: client events in, server events out.

Audio goes through the streaming VAD as it arrives; with `server_vad` a turn opens where speech starts
(less the prefix padding) and is committed after `silence_duration_ms` of silence; without it, the
client commits. While a turn is open, a partial decode of the turn so far goes to Triton every
`partial_interval_s` (one at a time per session; a decode still running when the next is due means
the next is skipped, so a session that cannot keep up decodes less often rather than later), and
LocalAgreement-2 (`agreement`, with a one-word margin at the end of the decoded audio) confirms words
as `delta` events. Each decode of a turn hears the session's earlier turns before it (up to
`final_context_s`, whole turns in one window) and is forced to begin with their texts and the turn's
confirmed words, so it answers only the words after them: the final decode decides everything after the
last confirmed word. These decodes encode their audio and a few seconds of silence (a window of at least
`MIN_ENCODER_WINDOW_S`), not Whisper's 30 s: several times faster, and a partial that repeats itself is
not used. A final that leaves speech out is decoded again alone, as a file is
(`TranscriptionService.transcribe_samples`: windows at pauses, and speech a window's segments leave out
decoded again). The final starts speculatively once a little silence follows the speech, and a commit of
the same audio keeps it. A commit cancels the partial in flight, and no partial starts while a final
decode is pending or once silence follows the speech: finals never wait behind partials in the gateway
(a partial Triton is already computing still finishes there first). `completed` events go out in turn
order. Every decode is prompted with the session's words before the audio it hears.

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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
Result = TypeVar("Result")

MIN_COMMIT = SAMPLE_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio."""
FIRST_PARTIAL_SPEECH = SAMPLE_RATE // 2
"""A turn is first decoded once it holds half a second of speech (after its prefix padding): a word or
two, which the next decode confirms or revises."""
PARTIAL_WINDOW = WINDOW_SAMPLES - 2 * SAMPLE_RATE
"""A turn longer than a window is decoded partially over its last 28 s; its final decode takes all of it."""
TRAILING_PAD = 5 * FRAME
"""A turn that the VAD ended is decoded up to 160 ms after its last speech frame, not through the whole
`silence_duration_ms`: the VAD heard silence there, and Whisper tiny decodes short clips worse with a
second of silence after them ("ask not" came back "Ask, knock!"). It is also when the final decode
starts, speculatively: once 160 ms of silence follow the speech, the audio the final will decode is all
there, so it is decoded while the VAD waits out the rest of `silence_duration_ms` (with OpenAI's 500 ms,
`completed` can go out 340 ms after the decode began), and dropped if speech resumes."""
SPECULATION_LEAD = 2 * SAMPLE_RATE // 5
"""A speculative final decode starts this long before the VAD's silence would end the turn, and not
before `TRAILING_PAD`: with OpenAI's 500 ms, at 160 ms; with a long `silence_duration_ms`, late in it, so
that pauses inside a turn do not start (and drop) finals and hold up its partials."""
CONTEXT_S = 20.0
"""By default (`LiveOptions.final_context_s`), each decode of a turn hears the session's whole turns that
began up to 10 s before it (half of it; when none did, the turn before if it began up to 20 s before), in
one window of at most 28 s with the turn, and is forced to begin with
their texts and the turn's confirmed words (`DecodeOptions.prefix`), so what it answers is the turn's
words after those: a few seconds of speech decoded alone, padded to a 30 s window, came out worse than
the same words in a file's window (live WER +0.06 to +0.09), and partials decoded alone confirmed words
that the final could not take back ("I'm meeting" for "The meeting"). CTranslate2 steps through the
forced prefix token by token, so every earlier turn costs decode time: with all the turns of 20 s, one
session's end of speech to `completed` measured p50 1.05 to 1.14 s, with those of 10 s 0.96 s (WER 0.12
against 0.13; with 5 s, 0.14)."""
MIN_ENCODER_WINDOW_S = 10.0
"""The shortest window a live decode's encoder hears (`LiveOptions.window_padding_s`). Journal sentences
decoded alone (tiny.en, beam 5) with 3 s of silence after them: WER 0.233 in a window of the audio and the
silence only, 0.219 in one of at least 8 s, 0.085 in one of at least 10 s, 0.109 in Whisper's 30 s."""
ENCODER_WINDOW_STEP_S = 2.0
"""Encoder windows are a multiple of this long (10, 12, ... 30 s), so that the decodes of sessions
share batches: the backend decodes windows of one length together."""
MIN_WORDS_PER_S = 1.0
"""A final decode with fewer words than this per second of the turn's speech has left some of it out
(Whisper ended the window early): the turn is decoded alone instead, as a file is (no speech the VAD
heard is lost)."""
MAX_WORDS_PER_S = 6.0
"""...and one with more (and 3 more) repeated itself: decoded alone too."""
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
    first_partial_interval_s: float = 0.4
    """Until a turn has confirmed words, its partial decodes come this often."""
    final_context_s: float = CONTEXT_S
    """Audio before a turn that its final decode hears (0: each turn decoded alone)."""
    partial_beam_size: int = 1
    final_beam_size: int = 5
    window_padding_s: float = 3.0
    """Silence after the audio that a decode continuing after known words encodes, in a window of at
    least `MIN_ENCODER_WINDOW_S` (0: a 30 s window)."""
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
    speech_from: int | None = None
    """The turn's first speech frame (server VAD turns)."""


@dataclass
class _Past:
    """A committed turn, as the next turns' final decodes read it: where it lay and, once decoded, its text."""

    start: int
    speech_from: int | None
    speech_to: int | None
    text: str | None = None


@dataclass(frozen=True)
class _Context:
    """The audio a decode of a turn hears before it: from `start`, the turns `inside` (whose texts begin
    the decoder's forced prefix); the turns `earlier` give its prompt."""

    start: int
    earlier: list[_Past]
    inside: list[_Past]


@dataclass(frozen=True)
class _FinalText:
    words: list[str]
    model: tuple[str, str]


@dataclass
class _Speculation:
    """A final decode started while the VAD waits out the silence after a turn's speech."""

    turn: _Turn
    end: int
    task: asyncio.Task[_FinalText]


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
        self._final_tasks: set[asyncio.Task[object]] = set()
        self._finals_pending = 0
        self._speculation: _Speculation | None = None
        self._past: deque[_Past] = deque(maxlen=64)
        self._context = round(options.final_context_s * SAMPLE_RATE)
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
                assert self._turn is not None
                self._turn.speech_from = at
                self._emit(SpeechStarted(audio_start_ms=_ms(change.at), item_id=self._turn_id()))
            elif isinstance(change, SpeechStop) and self._turn is not None:
                self._emit(SpeechStopped(audio_end_ms=_ms(change.at), item_id=self._turn.item_id))
                self._commit(min(change.at, change.speech_end + TRAILING_PAD), speech_to=change.speech_end)
            if probability >= threshold and self._turn is not None:
                self._turn.heard_speech = True
            self._speculate(at + FRAME)
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
        """Kept: the open turn (or, between turns, the prefix padding and the VAD's frame in progress) and
        the 10 s before it, which the next final decode may hear as context."""
        if self._turn is not None:
            self._audio.forget_before(self._turn.start - self._context)
        elif self.config.turn_detection is not None:
            keep = self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000 + FRAME
            self._audio.forget_before(self._audio.end - keep - self._context)

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
            self._drop_speculation()
            self._past.append(_Past(turn.start, None, None, ""))  # cleared audio is no later turn's context
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

    def _commit(self, end: int, speech_to: int | None = None) -> None:
        """The open turn, up to `end`, committed and decoded (or its speculative decode of the same audio
        kept)."""
        turn = self._turn
        assert turn is not None
        self._turn = None
        turn.closed = True
        self._cancel_partial()
        if self._detector is not None and self._detector.speaking:  # a commit by the client
            self._detector.end_turn(end)
        self._emit(Committed(item_id=turn.item_id, previous_item_id=self._previous_item))
        self._previous_item = turn.item_id
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.turn is turn and speculation.end == end:
            decode = speculation.task
        else:
            if speculation is not None:
                speculation.task.cancel()
            decode = self._start_final_decode(turn, end)
        self._past.append(_Past(turn.start, turn.speech_from, speech_to))
        self._finals_pending += 1
        record_live_decodes("final")
        # The turn's usage row: every second received since the row before (the silence before the turn
        # and after its speech included), so the rows add up to the audio the session received.
        billed = (self._audio.end - self._billed_to) / SAMPLE_RATE
        self._billed_to = self._audio.end
        past = self._past[-1]
        self._finals = self._track(self._final(turn, (end - turn.start) / SAMPLE_RATE, billed, decode, past))

    def _track(self, coroutine: Coroutine[Any, Any, Result]) -> asyncio.Task[Result]:
        task = asyncio.create_task(coroutine)
        self._final_tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._final_tasks.discard)  # type: ignore[arg-type]
        return task

    def _speculate(self, now: int) -> None:
        """Once `TRAILING_PAD` of silence follows the open turn's speech, start its final decode on the
        audio a commit there would decode; drop it when speech resumes."""
        detector, turn, speculation = self._detector, self._turn, self._speculation
        silence_from = detector.silence_from if detector is not None else None
        if speculation is not None and (
            turn is not speculation.turn
            or silence_from is None
            or silence_from + TRAILING_PAD != speculation.end
        ):
            self._drop_speculation()
            speculation = None
        if (
            speculation is None
            and turn is not None
            and turn.heard_speech
            and silence_from is not None
            and detector is not None
            and now - silence_from >= max(TRAILING_PAD, detector.silence - SPECULATION_LEAD)
        ):
            end = silence_from + TRAILING_PAD
            self._cancel_partial()  # the final will say more than a partial could
            self._speculation = _Speculation(turn, end, self._start_final_decode(turn, end))
            record_live_decodes("speculative")

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.task.cancel()
            self._speculation = None
            record_live_decodes("speculation_dropped")

    def _start_final_decode(self, turn: _Turn, end: int) -> asyncio.Task[_FinalText]:
        """The turn's final words, decoded with the turns before it as context where that is possible.
        Audio positions are fixed now; the texts (prompt and prefix), once the turn before is decoded."""
        start, earlier, inside = self._context_for(turn, end, decoded_only=False)
        samples = self._audio.read(start, end)
        context = _Context(start, earlier, inside)
        return self._track(self._decode_final(turn, samples, context, end, self._finals))

    def _prefixable(self) -> bool:
        """Whether the session's model takes a forced prefix (CTranslate2): then decodes hear the turns
        before them and continue after the words already known; otherwise each turn is decoded alone."""
        try:
            return self.transcription.model(self._model_name(self.config)).card.backend == "ctranslate2"
        except SamoError:
            return False

    def _context_for(
        self, turn: _Turn, end: int, *, decoded_only: bool
    ) -> tuple[int, list[_Past], list[_Past]]:
        """Where a decode of `turn` (up to `end`) starts, the committed turns wholly before that (their
        texts are its prompt), and those between there and the turn (their texts start its forced prefix):
        the whole turns that began in the half of `final_context_s` before the turn, or, when none did, the
        turn before if it began within `final_context_s` (and fits in one window with the turn).
        The turn's own start when the VAD placed no boundary between it and the turn before (a client's
        commit, a cleared turn), nothing before it is held, or (`decoded_only`, a partial) the turn before
        is still being decoded (or told no words)."""
        past = list(self._past)
        if not self._context or turn.speech_from is None or not self._prefixable():
            return turn.start, past, []
        floor = max(self._audio.start, turn.start - self._context, end - PARTIAL_WINDOW)
        near = turn.start - self._context // 2
        inside = 0
        for held in reversed(past):
            if held.speech_to is None or held.start < floor or (decoded_only and not held.text):
                break
            if inside and held.start < near:  # one turn from further back only when none is nearer
                break
            inside += 1
        if not inside:
            return turn.start, past, []
        return past[-inside].start, past[:-inside], past[-inside:]

    async def _decode_final(
        self, turn: _Turn, samples: np.ndarray, context: _Context, end: int, before: asyncio.Task[None] | None
    ) -> _FinalText:
        # The turn before first: its words are this decode's prompt or prefix, so a final that started
        # while the one before was still decoding (a loaded server, audio sent faster than real time) was
        # prompted differently from the same audio on an idle one (live WER 0.107 against 0.051).
        # Completed events then also go out in turn order. Shielded: dropping a speculative decode must
        # not cancel the turn before.
        if before is not None:
            with contextlib.suppress(SamoError):
                await asyncio.shield(before)
        name = self._model_name(self.config)
        served = self.transcription.model(name)
        model = (served.name, served.version)
        if samples.size <= PARTIAL_WINDOW and self._prefixable():
            samples, context = _without_untold(samples, context, turn.start)
            words = await self._decode_with_prefix(turn, samples, context, final=True)
            speech = (end - (turn.speech_from or turn.start) - TRAILING_PAD) / SAMPLE_RATE
            if _covers(len(words), speech):
                return _FinalText(words, model)
            record_live_decodes("context_fallback")
        # Decoded alone, as a file is (windows at pauses, speech their segments leave out decoded again):
        # a turn longer than a window, a model without a forced prefix, or a decode that left speech out.
        transcript = await self.transcription.transcribe_samples(
            self._decode_context,
            samples[turn.start - context.start :],
            self._decode_options(self.config, final=True),
            name,
        )
        return _FinalText(transcript.text.split(), (transcript.model.name, transcript.model.version))

    async def _decode_with_prefix(
        self, turn: _Turn, samples: np.ndarray, context: _Context, *, final: bool
    ) -> list[str]:
        """The turn's words in one window that starts with the turns of `context` (their texts, then the
        turn's confirmed words, are the decoder's forced prefix), prompted with the texts of the turns
        before: Whisper continues after the words already known, so the final decides only what follows
        the last confirmed word, and every decode of the turn hears what came before it."""
        known = [held.text or "" for held in context.inside] + [" ".join(turn.agreement.confirmed)]
        prefix = " ".join(" ".join(known).split())
        options = self._decode_options(
            self.config, final=final, previous=[held.text or "" for held in context.earlier]
        ).model_copy(
            update={
                "prefix": prefix or None,
                "without_timestamps": True,
                "window_s": self._encoder_window_s(samples.size),
            }
        )
        window = await self.transcription.decode_window(
            self._decode_context, samples, options, self._model_name(self.config)
        )
        new = " ".join(s.text for s in window.segments if not _silent(s.no_speech_prob, s.avg_logprob))
        return [*turn.agreement.confirmed, *new.split()]

    def _encoder_window_s(self, samples: int) -> float | None:
        """How much the encoder of a decode of `samples` hears: the audio, `window_padding_s` of silence
        after it and at least `MIN_ENCODER_WINDOW_S`; None (0 padding): a 30 s window."""
        if not self.options.window_padding_s:
            return None
        seconds = max(MIN_ENCODER_WINDOW_S, samples / SAMPLE_RATE + self.options.window_padding_s)
        # In steps: Triton batches only windows of one encoder length.
        return min(
            math.ceil(seconds / ENCODER_WINDOW_STEP_S) * ENCODER_WINDOW_STEP_S, WINDOW_SAMPLES / SAMPLE_RATE
        )

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
        self, turn: _Turn, seconds: float, billed_s: float, decode: asyncio.Task[_FinalText], past: _Past
    ) -> None:
        recorded = False
        try:
            try:
                final = await decode
                failure = None
            except SamoError as error:
                final, failure = None, error
            if failure is not None or final is None:
                message = failure.message if failure else "transcription failed"
                detail = ErrorDetail(
                    type="server_error", code=failure.type.value if failure else None, message=message
                )
                past.text = ""
                self._emit(TranscriptionFailed(item_id=turn.item_id, error=detail))
                recorded = True  # a failed turn is not billed: its row carries the error, no units
                self._record(turn.item_id, failure.type.value if failure else "server_error", 0.0)
                return
            had_words = bool(turn.agreement.confirmed)
            rest = turn.agreement.final(final.words)
            if rest:
                self._emit(Delta(item_id=turn.item_id, delta=joined(rest, after=had_words)))
            text = " ".join(turn.agreement.confirmed)
            self._transcripts.append(text)
            past.text = text
            usage = DurationUsage(seconds=round(seconds, 3))
            self._emit(Completed(item_id=turn.item_id, transcript=text, usage=usage))
            recorded = True
            self._record(turn.item_id, "ok", billed_s, final.model)
        finally:
            self._finals_pending -= 1
            if not recorded:  # cancelled: the session ended before the turn's final decode
                self._record(turn.item_id, "cancelled", billed_s)

    async def _partial_loop(self) -> None:
        """A partial decode of the open turn every `partial_interval_s`, one at a time: one still running
        when the next is due delays it (the session skips decodes rather than queueing them). None while a
        final is pending or once silence follows the speech: the final will say more, and Triton is free
        for it."""
        last_start = -math.inf
        while True:
            await asyncio.sleep(PARTIAL_TICK_S)
            turn = self._turn
            interval = (
                self.options.partial_interval_s
                if turn is not None and turn.agreement.confirmed
                else self.options.first_partial_interval_s
            )
            if (
                turn is None
                or not turn.heard_speech
                or self._finals_pending
                or self._speculation is not None
                or (self._detector is not None and self._detector.silence_from is not None)
                or self._audio.end - (turn.speech_from or turn.start) < FIRST_PARTIAL_SPEECH
                or self._audio.end <= turn.decoded_to
                or time.monotonic() - last_start < interval
            ):
                continue
            last_start = time.monotonic()
            self._partial = asyncio.create_task(self._decode_partial(turn))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({self._partial})
            took = time.monotonic() - last_start
            record_live_decodes("partial")
            record_live_decodes("skipped", max(0, math.ceil(took / interval) - 1))

    async def _decode_partial(self, turn: _Turn) -> None:
        end = self._audio.end
        context = _Context(*self._context_for(turn, end, decoded_only=True))
        turn.decoded_to = end
        try:
            if end - context.start <= PARTIAL_WINDOW and self._prefixable():
                words = await self._decode_with_prefix(
                    turn, self._audio.read(context.start, end), context, final=False
                )
                from_start = True
                heard_from = turn.start
            else:  # a turn longer than a window: its last 28 s alone
                start = heard_from = max(turn.start, end - PARTIAL_WINDOW)
                window = await self.transcription.decode_window(
                    self._decode_context,
                    self._audio.read(start, end),
                    self._decode_options(self.config, final=False),
                    self._model_name(self.config),
                )
                words = " ".join(
                    s.text for s in window.segments if not _silent(s.no_speech_prob, s.avg_logprob)
                ).split()
                from_start = start == turn.start
        except SamoError as error:  # a partial is revisable: the final decode will tell
            logger.info("live partial decode failed (%s); the turn's final decode follows", error.type.value)
            return
        if turn.closed:
            return
        if _repeated(len(words), (end - max(heard_from, turn.speech_from or turn.start)) / SAMPLE_RATE):
            # Whisper looping on audio cut off mid-speech ("my therapist my therapist ..."): two such
            # decodes would agree, and confirmed words never go back.
            record_live_decodes("repeated")
            return
        had_words = bool(turn.agreement.confirmed)
        confirmed, tail = turn.agreement.hypothesis(words, from_start=from_start)
        if confirmed:
            self._emit(Delta(item_id=turn.item_id, delta=joined(confirmed, after=had_words)))
        self._emit(
            Partial(item_id=turn.item_id, confirmed=" ".join(turn.agreement.confirmed), tail=" ".join(tail))
        )

    def _cancel_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()

    def _decode_options(
        self, config: LiveConfig, *, final: bool, previous: list[str] | None = None
    ) -> DecodeOptions:
        """`previous`: the texts before the decoded audio (default: every completed turn's)."""
        transcription = config.transcription
        # The session's own words so far condition the decoder, as Whisper's long-form decoding conditions
        # each window on the text before it: a turn alone is a short clip with no context.
        texts = self._transcripts if previous is None else previous
        previous_words = " ".join(" ".join(texts).split()[-PROMPT_WORDS:])
        prompt = " ".join(part for part in (transcription.prompt, previous_words) if part)
        return DecodeOptions(
            language=transcription.language or None,
            initial_prompt=prompt[-1000:] or None,
            beam_size=self.options.final_beam_size if final else self.options.partial_beam_size,
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
        tasks = [self._partials, self._partial, *self._final_tasks]
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


def _without_untold(samples: np.ndarray, context: _Context, turn_start: int) -> tuple[np.ndarray, _Context]:
    """The context from after the last turn in it without a text (its decode failed, or heard no words):
    a prefix that leaves that turn's speech out would make the decode tell it as this turn's."""
    untold = [index for index, held in enumerate(context.inside) if not held.text]
    if not untold:
        return samples, context
    cut = untold[-1] + 1
    start = context.inside[cut].start if cut < len(context.inside) else turn_start
    trimmed = _Context(start, context.earlier + context.inside[:cut], context.inside[cut:])
    return samples[start - context.start :], trimmed


def _covers(words: int, speech_s: float) -> bool:
    """Whether a decode's word count fits the turn's speech: too few, it left speech out (Whisper may end
    a window early); too many, it repeated itself."""
    return MIN_WORDS_PER_S * speech_s <= words and not _repeated(words, speech_s)


def _repeated(words: int, speech_s: float) -> bool:
    """Whether a decode told more words than `speech_s` of speech can hold: Whisper repeated itself."""
    return words > MAX_WORDS_PER_S * speech_s + 3


def _silent(no_speech_prob: float, avg_logprob: float) -> bool:
    # Whisper's own rule for silence, as file transcription applies it.
    return no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB


def _param_of(message: str) -> str | None:
    """The field a validation message names (`language: ...`), for the error's `param`."""
    head, separator, _ = message.partition(":")
    return head if separator and " " not in head and len(head) < 64 else None
