"""Splitting audio into Whisper's 30 s windows at pauses, with the Silero VAD that faster-whisper ships."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from samo.contracts.whisper import SAMPLE_RATE, WINDOW_SECONDS

WINDOW = int(WINDOW_SECONDS * SAMPLE_RATE)
# Speech runs longer than this are cut at their last pause by the VAD itself; a little under 30 s
# leaves room for the padding around speech.
VAD_OPTIONS = VadOptions(
    min_silence_duration_ms=300, speech_pad_ms=200, max_speech_duration_s=WINDOW_SECONDS - 2
)


def plan_windows(samples: np.ndarray) -> list[tuple[int, int]]:
    """Ordered, disjoint (start, end) sample ranges of at most 30 s that cover the speech.

    Audio up to 30 s is one window. Longer audio keeps consecutive speech regions together while they
    fit in a window, so cuts fall in pauses; silence between windows is skipped.
    """
    if samples.size <= WINDOW:
        return [(0, int(samples.size))]
    windows: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for region in get_speech_timestamps(samples, VAD_OPTIONS, sampling_rate=SAMPLE_RATE):
        start, end = int(region["start"]), int(region["end"])
        while end - start > WINDOW:  # no pause to cut at: cut hard
            if current:
                windows.append(current)
                current = None
            windows.append((start, start + WINDOW))
            start += WINDOW
        if current and end - current[0] <= WINDOW:
            current = (current[0], end)
        else:
            if current:
                windows.append(current)
            current = (start, end)
    if current:
        windows.append(current)
    return windows
