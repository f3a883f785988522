"""Long-audio windows: pure grouping rules, VAD on real speech, and the streaming planner."""

from __future__ import annotations

import itertools

import numpy as np

from gateway.transcription.coverage import uncovered
from gateway.transcription.planner import VAD_CHUNK, Window, WindowPlanner
from gateway.transcription.windows import WINDOW, group_regions, plan_windows, speech_regions
from tests.speech import RATE, long_speech


def test_regions_that_fit_share_one_window() -> None:
    assert group_regions([(0, 100), (150, 300)], window=1000) == [(0, 300)]


def test_cut_moves_back_to_the_longest_pause() -> None:
    # Pauses of 10, 200 (after 600) and 10 samples; the 1000-sample window must be cut once.
    regions = [(0, 290), (300, 600), (800, 990), (1000, 1200)]
    assert group_regions(regions, window=1000) == [(0, 600), (800, 1200)]


def test_overlong_region_is_cut_hard() -> None:
    assert group_regions([(0, 2500)], window=1000) == [(0, 1000), (1000, 2000), (2000, 2500)]


def test_windows_are_ordered_disjoint_and_bounded() -> None:
    rng = np.random.default_rng(0)
    edges = np.cumsum(rng.integers(50, 400, size=200))
    regions = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=False)]
    windows = group_regions(regions, window=1000)
    for (a, b), (c, d) in itertools.pairwise(windows):
        assert a < b <= c < d
    assert all(b - a <= 1000 for a, b in windows)
    assert windows[0][0] == regions[0][0] and windows[-1][1] == regions[-1][1]


def test_short_audio_is_one_window() -> None:
    assert plan_windows(10 * RATE, [(RATE, 2 * RATE), (5 * RATE, 9 * RATE)]) == [(0, 10 * RATE)]


def test_real_speech_is_cut_in_the_pauses_between_repetitions() -> None:
    audio = long_speech(repeats=6).astype(np.float32) / 32768
    windows = plan_windows(audio.size, speech_regions(audio))
    assert all(end - start <= WINDOW for start, end in windows)
    clip = 12 * RATE  # 11 s of speech and 1 s of pause per repetition
    for _, end in windows[:-1]:
        assert end % clip > 10.5 * RATE or end % clip < 0.5 * RATE, (
            f"cut at {end / RATE:.2f} s is inside a sentence"
        )


def stream_through_planner(audio: np.ndarray, block: int = 10 * RATE) -> tuple[list[Window], int]:
    """The planner's windows for `audio` fed in `block`-sample pieces, and the most audio it held."""
    planner = WindowPlanner()
    windows, held = [], 0
    for start in range(0, audio.size, block):
        windows += planner.add(audio[start : start + block])
        held = max(held, planner.buffered)
    return windows + planner.finish(), held


def test_streamed_windows_keep_all_speech_the_whole_file_vad_finds_and_hold_little_audio() -> None:
    audio = long_speech(repeats=25, pause_s=1.0).astype(np.float32) / 32768  # 5 min
    whole = speech_regions(audio)
    windows, held = stream_through_planner(audio)
    for before, after in itertools.pairwise(windows):
        assert before.end <= after.start
    assert all(0 < w.end - w.start <= WINDOW for w in windows)
    for window in windows:
        assert np.array_equal(window.samples, audio[window.start : window.end])
        assert all(window.start <= a < b <= window.end for a, b in window.speech)
    spans = [span for w in windows for span in w.speech]
    assert uncovered(whole, spans, 0, audio.size) == []
    # One VAD chunk ahead of the cut, one held-back window behind it, and a block being added.
    assert held <= VAD_CHUNK + WINDOW + 10 * RATE
    clip = 12 * RATE
    for window in windows[:-1]:
        assert window.end % clip > 10.5 * RATE or window.end % clip < 0.5 * RATE


def test_audio_up_to_a_vad_chunk_is_planned_as_the_whole_file() -> None:
    audio = long_speech(repeats=4, pause_s=1.0).astype(np.float32) / 32768  # 48 s
    windows, _ = stream_through_planner(audio, block=7 * RATE)
    assert [(w.start, w.end) for w in windows] == plan_windows(audio.size, speech_regions(audio))
    short = audio[: 20 * RATE]
    (only,), _ = stream_through_planner(short)
    assert (only.start, only.end) == (0, short.size)


def test_silence_gives_no_windows_and_keeps_no_audio() -> None:
    windows, held = stream_through_planner(np.zeros(10 * 60 * RATE, dtype=np.float32))
    assert windows == []
    assert held <= VAD_CHUNK + 10 * RATE
