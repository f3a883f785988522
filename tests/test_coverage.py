"""Coverage rules: which speech a window's segments leave out, and which segments count as silence."""

from __future__ import annotations

from gateway.transcription.coverage import MIN_UNCOVERED, uncovered
from gateway.transcription.service import _place
from samo.contracts.whisper import SAMPLE_RATE, WindowSegment, WindowTranscript

S = SAMPLE_RATE


def test_a_window_whose_last_sentence_is_missing_gets_its_tail_decoded_again() -> None:
    speech = [(0, 5 * S), (6 * S, 9 * S), (10 * S, 14 * S)]
    covered = [(0, 5 * S), (6 * S, 9 * S)]
    assert uncovered(speech, covered, 0, 14 * S) == [(10 * S, 14 * S)]


def test_a_skipped_sentence_inside_a_window_is_decoded_again() -> None:
    speech = [(0, 5 * S), (6 * S, 9 * S), (10 * S, 14 * S)]
    covered = [(0, 5 * S), (10 * S, 14 * S)]
    assert uncovered(speech, covered, 0, 14 * S) == [(6 * S, 9 * S)]


def test_consecutive_missing_sentences_are_one_repair() -> None:
    speech = [(0, 5 * S), (6 * S, 9 * S), (10 * S, 14 * S)]
    assert uncovered(speech, [(0, 5 * S)], 0, 14 * S) == [(6 * S, 14 * S)]


def test_a_repair_starts_where_the_last_segment_ended() -> None:
    # The segment stops inside the speech region: the rest of the region is decoded again.
    assert uncovered([(0, 10 * S)], [(0, 4 * S)], 0, 10 * S) == [(4 * S, 10 * S)]


def test_timestamp_slack_at_the_edges_of_speech_is_not_a_gap() -> None:
    slack = MIN_UNCOVERED - 1
    speech = [(0, 5 * S + slack), (6 * S - slack, 9 * S)]
    assert uncovered(speech, [(0, 5 * S), (6 * S, 9 * S)], 0, 9 * S) == []


def test_speech_outside_the_window_is_not_its_business() -> None:
    assert uncovered([(0, 5 * S), (20 * S, 25 * S)], [(0, 5 * S)], 0, 10 * S) == []


def test_nothing_decoded_over_speech_repairs_all_of_it_in_windows_of_30_s() -> None:
    speech = [(0, 20 * S), (21 * S, 40 * S)]
    assert uncovered(speech, [], 0, 40 * S) == [(0, 20 * S), (21 * S, 40 * S)]


def _transcript(*segments: tuple[float, float, float]) -> WindowTranscript:
    return WindowTranscript(
        language="en",
        language_probability=1.0,
        segments=tuple(
            WindowSegment(start=a, end=b, text="words", avg_logprob=-1.5, no_speech_prob=p)
            for a, b, p in segments
        ),
    )


def test_whisper_calls_it_silence_only_where_the_vad_hears_none() -> None:
    # Both segments look like silence to Whisper (no_speech_prob 0.9, avg_logprob -1.5); the VAD
    # hears speech under the second one only, so only the first is dropped.
    transcript = _transcript((0.0, 2.0, 0.9), (3.0, 5.0, 0.9))
    placed = _place(transcript, 10 * S, 40 * S, [(13 * S, 14 * S)])
    assert [(p.start, p.end) for p in placed] == [(13 * S, 15 * S)]


def test_confident_segments_are_kept_and_placed_inside_their_window() -> None:
    placed = _place(_transcript((0.0, 2.0, 0.1), (29.0, 31.0, 0.1)), 10 * S, 40 * S, [])
    assert [(p.start, p.end) for p in placed] == [(10 * S, 12 * S), (39 * S, 40 * S)]
