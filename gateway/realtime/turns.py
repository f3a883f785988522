"""Where speech starts and stops in a live stream: the Silero VAD that file transcription uses
(faster-whisper's v6 model), run frame by frame with its state carried between chunks, and OpenAI's
`server_vad` rule over its probabilities.

Positions are samples at 16 kHz from the start of the session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.realtime.events import ServerVad
from samo.contracts.whisper import SAMPLE_RATE

FRAME = 512
"""Samples per VAD frame (32 ms): Silero's window at 16 kHz."""
_CONTEXT = 64  # samples of the previous frame each frame is read with, as faster-whisper does
_HYSTERESIS = 0.15  # Silero's: speech goes on while the probability stays above threshold - 0.15


class StreamingVad:
    """Speech probabilities of 32 ms frames, chunk after chunk; a chunk's trailing part waits for the next."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model  # cached: one ONNX session for the process

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One probability per whole frame now available (runs in a worker thread: about 0.1 ms a frame)."""
        audio = np.concatenate([self._pending, samples]) if self._pending.size else samples
        count = audio.size // FRAME
        self._pending = audio[count * FRAME :].copy()
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: count * FRAME].reshape(count, FRAME)
        contexts = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]])
        self._context = frames[-1, -_CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1).astype(np.float32)
        output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(output, dtype=np.float32).reshape(-1)[:count]


@dataclass(frozen=True)
class SpeechStart:
    at: int
    """Where the turn's audio starts: the first speech frame less the prefix padding."""


@dataclass(frozen=True)
class SpeechStop:
    at: int
    """Where the turn's audio ends: the end of the silence that ended it."""
    speech_end: int
    """Where that silence began."""


class TurnDetector:
    """OpenAI's server VAD over VAD frames: `frame()` answers a start, a stop or nothing."""

    def __init__(self, vad: ServerVad, floor: int = 0) -> None:
        self.threshold = vad.threshold
        self.negative = max(vad.threshold - _HYSTERESIS, 0.01)
        self.prefix = vad.prefix_padding_ms * SAMPLE_RATE // 1000
        self.silence = math.ceil(vad.silence_duration_ms * SAMPLE_RATE / 1000)
        self.floor = floor
        """No turn starts before this (the end of the previous one)."""
        self.speaking = False
        self._silence_from: int | None = None

    def frame(self, start: int, probability: float) -> SpeechStart | SpeechStop | None:
        end = start + FRAME
        if not self.speaking:
            if probability >= self.threshold:
                self.speaking = True
                self._silence_from = None
                return SpeechStart(max(self.floor, start - self.prefix))
            return None
        if probability >= self.threshold:
            self._silence_from = None
        elif probability < self.negative and self._silence_from is None:
            self._silence_from = start
        if self._silence_from is not None and end - self._silence_from >= self.silence:
            stop = SpeechStop(end, self._silence_from)
            # The next turn may start in this one's closing silence: its prefix padding is not cut short.
            self.end_turn(self._silence_from)
            return stop
        return None

    @property
    def silence_from(self) -> int | None:
        """Where the silence that may end the open turn began (None: speech goes on, or no turn)."""
        return self._silence_from if self.speaking else None

    def end_turn(self, at: int) -> None:
        """The turn ended (its silence began at `at`, or the client committed there): the next one
        starts after `at`."""
        self.speaking = False
        self._silence_from = None
        self.floor = at
