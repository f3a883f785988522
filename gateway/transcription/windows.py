"""Splitting audio into Whisper's 30 s windows at pauses, with the Silero VAD that faster-whisper ships."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from samo.contracts.whisper import SAMPLE_RATE, WINDOW_SECONDS

if TYPE_CHECKING:
    from faster_whisper.vad import VadOptions

WINDOW = int(WINDOW_SECONDS * SAMPLE_RATE)


@cache
def vad_options() -> VadOptions:
    """The VAD's settings: speech runs over 28 s are cut at their last pause by the VAD itself (a
    little under 30 s leaves room for the padding around speech). faster-whisper loads here, with the
    first audio: a gateway that serves text models only starts without it."""
    from faster_whisper.vad import VadOptions

    return VadOptions(
        min_silence_duration_ms=300, speech_pad_ms=200, max_speech_duration_s=WINDOW_SECONDS - 2
    )


# A cut is moved back to the longest pause in the last half of the window: windows are decoded in
# parallel without each other's text, so a cut between sentences loses less than one within them.
MIN_FILL = 0.5


def group_regions(regions: Sequence[tuple[int, int]], window: int = WINDOW) -> list[tuple[int, int]]:
    """Ordered, disjoint windows of at most `window` samples over ordered speech regions, cut at the
    longest pause available; a region longer than a window is cut hard."""
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        while end - start > window:
            pieces.append((start, start + window))
            start += window
        pieces.append((start, end))
    windows: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    for piece in pieces:
        if current and piece[1] - current[0][0] > window:
            cut = _best_cut(current, window)
            windows.append((current[0][0], current[cut - 1][1]))
            current = current[cut:]
            if current and piece[1] - current[0][0] > window:
                windows.append((current[0][0], current[-1][1]))
                current = []
        current.append(piece)
    if current:
        windows.append((current[0][0], current[-1][1]))
    return windows


def _best_cut(current: list[tuple[int, int]], window: int) -> int:
    """How many of `current`'s regions to keep: all of them, or up to the longest later pause."""
    start = current[0][0]
    candidates = [i for i in range(1, len(current)) if current[i - 1][1] - start >= MIN_FILL * window]
    if not candidates:
        return len(current)
    return max(candidates, key=lambda i: current[i][0] - current[i - 1][1])


def speech_regions(samples: np.ndarray) -> list[tuple[int, int]]:
    """Where the VAD hears speech, in samples, ordered and disjoint (each padded by 200 ms)."""
    from faster_whisper.vad import get_speech_timestamps

    regions = get_speech_timestamps(samples, vad_options(), sampling_rate=SAMPLE_RATE)
    return [(int(r["start"]), int(r["end"])) for r in regions]


def plan_windows(size: int, speech: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Audio up to 30 s is one window; longer audio is cut at pauses into windows covering the speech
    (silence between windows is skipped)."""
    if size <= WINDOW:
        return [(0, size)]
    return group_regions(speech)
