"""Whisper windows for audio that arrives block by block, holding a bounded amount of it.

The VAD runs over at most `VAD_CHUNK` samples at a time (its memory grows with its input: about
0.4 MB per second of audio). Each pass ends at a cut placed in a pause, so the speech before the cut is
final; the next pass starts at the cut. Windows are grouped as `group_regions` groups the whole file's
speech, except that the last window of a pass is held back until later speech can no longer join it.
So the planner keeps at most one window of audio behind the cut plus one VAD chunk ahead of it, about
90 s (6 MB of float32), whatever the recording's length.

Audio up to `VAD_CHUNK` is planned exactly as before streaming: one VAD pass over all of it, one window
when it is at most 30 s long.

All positions are in samples at 16 kHz from the start of the audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.transcription.coverage import Span, clip
from gateway.transcription.windows import WINDOW, group_regions, speech_regions
from samo.contracts.whisper import SAMPLE_RATE

VAD_CHUNK = 60 * SAMPLE_RATE
"""Most audio one VAD pass reads: about 25 MB of VAD memory. Each pass moves on by at least half of it."""

MIN_CUT_PAUSE = SAMPLE_RATE
"""A pass ends in a pause between speech regions (already padded by the VAD) at least this long, half
of it on either side of the cut: the next pass starts its VAD afresh there, as at the start of a file,
in silence."""

LOOKAHEAD = SAMPLE_RATE
"""A pass ends at least this far before the audio it read ends: speech that starts later has not been
heard yet, and the VAD pads speech 200 ms back."""


@dataclass(frozen=True)
class Window:
    """A stretch of audio to decode as one Whisper window."""

    start: int
    end: int
    samples: np.ndarray
    """The window's audio (a copy: the planner's buffer moves on)."""
    speech: tuple[Span, ...]
    """Where the VAD heard speech inside the window."""


class WindowPlanner:
    """Feed decoded audio in with `add`, then call `finish`; both return the windows now final, in order."""

    def __init__(
        self,
        find_speech: Callable[[np.ndarray], list[Span]] = speech_regions,
        *,
        chunk: int = VAD_CHUNK,
        window: int = WINDOW,
    ) -> None:
        if chunk <= 2 * LOOKAHEAD + window:
            raise ValueError("a VAD chunk must be longer than a window and the lookahead on either side")
        self._find_speech = find_speech
        self._chunk = chunk
        self._window = window
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # position of _buffer[0]
        self._pending: list[np.ndarray] = []  # blocks after _buffer
        self.size = 0
        """Samples received so far."""
        self._vad_from = 0  # where the next VAD pass starts
        self._held: list[Span] = []  # final speech not yet in a window: the last window of a pass

    @property
    def buffered(self) -> int:
        """Samples held now (the memory bound's subject)."""
        return self._buffer.size + sum(block.size for block in self._pending)

    def add(self, samples: np.ndarray) -> list[Window]:
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self.size += samples.size
        windows: list[Window] = []
        while self.size - self._vad_from >= self._chunk:
            windows += self._pass(self._vad_from + self._chunk, final=False)
        return windows

    def finish(self) -> list[Window]:
        if self.size == 0:
            return []
        if self.size <= self._window:  # short audio is one window, silence and all
            speech = tuple(self._find_speech(self._audio(0, self.size)))
            return [Window(0, self.size, self._audio(0, self.size).copy(), speech)]
        return self._pass(self.size, final=True)

    def _pass(self, stop: int, *, final: bool) -> list[Window]:
        begin = self._vad_from
        found = self._find_speech(self._audio(begin, stop))
        regions = [(begin + a, begin + b) for a, b in found]
        cut = stop if final else self._cut(regions, begin, stop)
        self._held += clip(regions, begin, cut)
        self._vad_from = cut
        windows = group_regions(self._held, self._window)
        if not windows:
            ready: list[Span] = []
        elif final or cut - windows[-1][0] >= self._window:  # nothing later can join the last one
            ready = windows
        else:
            ready = windows[:-1]
        planned = [Window(a, b, self._audio(a, b).copy(), tuple(clip(self._held, a, b))) for a, b in ready]
        if ready:
            self._held = clip(self._held, ready[-1][1], cut)
        self._trim(min([cut] + [a for a, _ in self._held]))
        return planned

    def _cut(self, regions: list[Span], begin: int, stop: int) -> int:
        """Where this pass ends: the latest long pause in the second half of what it read, else the
        widest pause there, else (speech throughout) as late as the lookahead allows."""
        low, high = begin + (stop - begin) // 2, stop - LOOKAHEAD
        speech_end = max([begin] + [b for _, b in regions])
        if high - speech_end >= MIN_CUT_PAUSE // 2:  # trailing silence
            return high
        pauses = []
        previous = begin
        for a, b in regions:
            if a > previous:
                pauses.append((previous, a))
            previous = max(previous, b)
        for a, b in reversed(pauses):
            cut = b - MIN_CUT_PAUSE // 2
            if b - a >= MIN_CUT_PAUSE and low <= cut <= high:
                return cut
        inside = [(b - a, (a + b) // 2) for a, b in pauses if low <= (a + b) // 2 <= high]
        return max(inside)[1] if inside else high

    def _audio(self, start: int, end: int) -> np.ndarray:
        if self._pending:
            self._buffer = np.concatenate([self._buffer, *self._pending])
            self._pending = []
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    def _trim(self, keep_from: int) -> None:
        """Forget the audio before `keep_from` (copied, so the old buffer is freed)."""
        self._audio(keep_from, keep_from)
        self._buffer = self._buffer[keep_from - self._buffer_start :].copy()
        self._buffer_start = keep_from
