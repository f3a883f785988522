"""Every stretch of speech the VAD finds must reach the transcript.

Windows are decoded in parallel, each without the others' text, so Whisper's own long-form remedy
(decode again from the last complete timestamp, one window after another) is not available. Whisper
was trained to leave an utterance that a 30 s window cuts off for the next window, and tiny models
skip utterances inside a window too: a window's last sentence, or a sentence in its middle, can come
back missing with nothing to show for it. So after a window is decoded, the speech that none of its
segments covers is found here and decoded again as its own (shorter) window, in parallel with
everything else in flight, so repairs share Triton's batches with other requests.

All positions are in samples at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.transcription.windows import WINDOW, group_regions
from samo.contracts.whisper import SAMPLE_RATE
from samo.generation.whisper_coverage import MIN_UNCOVERED_S, clip, gaps

__all__ = ["MIN_UNCOVERED", "Span", "clip", "overlaps", "uncovered"]

Span = tuple[int, int]

MIN_UNCOVERED = int(MIN_UNCOVERED_S * SAMPLE_RATE)


def overlaps(span: Span, spans: Sequence[Span]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in spans)


def uncovered(speech: Sequence[Span], covered: Sequence[Span], start: int, end: int) -> list[Span]:
    """Spans of [start, end] to decode again: for each gap between covered spans, the hull of the
    speech pieces in it that last at least `MIN_UNCOVERED`, split into windows of at most 30 s."""
    repairs: list[Span] = []
    for pieces in gaps(speech, covered, start, end, MIN_UNCOVERED):
        repairs.extend(group_regions(pieces, WINDOW))
    return repairs
