"""Which stretches of a window's speech its decoded segments leave out: shared by the gateway, which
checks every window of a file, and the CTranslate2 backend, which decodes such stretches again from the
window's encoder output before it answers (`samo/triton/backends/whisper_ct2.py`).

Positions are in any one unit (samples in the gateway, seconds in the backend), the same for all
arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T", int, float)

MIN_UNCOVERED_S = 0.6
"""Speech outside every segment for at least this long is decoded again. Shorter stretches come from
the VAD's 200 ms padding on each side of speech and Whisper's coarse timestamps (seen up to 0.5 s on
journal speech); a spoken word with its padding is longer."""


def clip(spans: Sequence[tuple[T, T]], start: T, end: T) -> list[tuple[T, T]]:
    """`spans` cut to [start, end], empty pieces left out."""
    return [(max(a, start), min(b, end)) for a, b in spans if min(b, end) > max(a, start)]


def gaps(
    speech: Sequence[tuple[T, T]], covered: Sequence[tuple[T, T]], start: T, end: T, min_length: T
) -> list[list[tuple[T, T]]]:
    """For each gap between covered spans of [start, end], the pieces of speech in it that last at
    least `min_length` (gaps without such pieces left out)."""
    edges = sorted(clip(covered, start, end))
    holes: list[tuple[T, T]] = []
    position = start
    for a, b in edges:
        if a > position:
            holes.append((position, a))
        position = max(position, b)
    if position < end:
        holes.append((position, end))
    found = []
    for hole_start, hole_end in holes:
        pieces = [p for p in clip(speech, hole_start, hole_end) if p[1] - p[0] >= min_length]
        if pieces:
            found.append(pieces)
    return found
