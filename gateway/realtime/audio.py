"""The audio a live session keeps: from the start of the open turn (or its prefix padding) to now."""

from __future__ import annotations

import numpy as np


class SessionAudio:
    """16 kHz samples addressed by their position since the session started; what lies before
    `start` has been forgotten. Chunks are joined only when a stretch is read, so appending 20 ms
    chunks to a long turn costs no copies."""

    def __init__(self) -> None:
        self.start = 0
        self.end = 0
        self._chunks: list[np.ndarray] = []

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self.end += samples.size

    def read(self, start: int, end: int) -> np.ndarray:
        """A copy of [start, end), clipped to what is kept."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        start, end = max(start, self.start), min(end, self.end)
        return self._chunks[0][start - self.start : max(end, start) - self.start].copy()

    def forget_before(self, position: int) -> None:
        position = min(max(position, self.start), self.end)
        if position == self.start:
            return
        kept = self.read(position, self.end)
        self._chunks = [kept] if kept.size else []
        self.start = position
