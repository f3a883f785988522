"""Word timestamps for Whisper on CTranslate2, with faster-whisper's own code.

`ctranslate2.models.Whisper.align` aligns text tokens with the audio (cross-attention of the model's
alignment heads, median filter, DTW); faster-whisper's `WhisperModel.find_alignment` turns that into
words (token runs between spaces, start/end at the alignment's jumps, mean token probability), and
`WhisperModel.add_word_timestamps` merges punctuation into words (`merge_punctuations`), trims words
that run over sentence and segment boundaries, and moves segment bounds to their words. Both are
methods that read a few attributes of `self`; they are called here on the small objects below, not
copied. One `align` call covers every window of a batch that shares a start sequence (language and
task); the trimming runs per window so windows of different requests never influence each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import WhisperModel

# faster-whisper's defaults for `transcribe(word_timestamps=True)`.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
INPUT_STRIDE = 2  # the encoder halves the mel frames


class _Aligner:
    """What `WhisperModel.find_alignment` reads of `self`: the CTranslate2 model and its time scale."""

    # (tokenizer, text tokens per window, encoder output, frames per window) -> words per window.
    find_alignment: Callable[[Tokenizer, list[list[int]], Any, list[int]], list[list[dict]]] = (
        WhisperModel.find_alignment  # pyright: ignore[reportAssignmentType]  # hinted for one window; it takes a batch
    )

    def __init__(self, model: Any, tokens_per_second: int) -> None:
        self.model = model
        self.tokens_per_second = tokens_per_second


class _WindowWords:
    """What `WhisperModel.add_word_timestamps` reads of `self`, with one window's alignment computed
    beforehand (in a batch) and handed back by `find_alignment`."""

    # (segments per window, tokenizer, encoder output, frames, prepend, append, last speech) -> last speech.
    add_word_timestamps: Callable[[list[list[dict]], Tokenizer, Any, int, str, str, float], float] = (
        WhisperModel.add_word_timestamps  # pyright: ignore[reportAssignmentType]  # hinted for one window; it takes a batch
    )

    def __init__(self, alignment: list[dict], frames_per_second: int) -> None:
        self.alignment = alignment
        self.frames_per_second = frames_per_second

    def find_alignment(self, *_: object) -> list[list[dict]]:
        return [self.alignment]


def add_words(
    model: Any,
    tokenizer: Tokenizer,
    features: np.ndarray,
    windows: Sequence[list[dict]],
    num_frames: Sequence[int],
    hop_length: int,
    sampling_rate: int,
) -> None:
    """Adds `words` ([{word, start, end, probability}], window-relative seconds) to every segment.

    `windows[i]` is window i's segments (dicts with `start`, `end` and text `tokens`), `features[i]` its
    mel features or encoder output (numpy), `num_frames[i]` its mel frames before padding; all windows share
    `tokenizer`'s start sequence. Segment `start`/`end` move to their words as in faster-whisper; words
    are then kept inside their segment.
    """
    frames_per_second = sampling_rate // hop_length
    aligner = _Aligner(model, sampling_rate // (hop_length * INPUT_STRIDE))
    text_tokens = [
        [t for segment in window for t in segment["tokens"] if t < tokenizer.eot] for window in windows
    ]
    spoken = [i for i, tokens in enumerate(text_tokens) if tokens]
    if not spoken:
        return
    alignments = aligner.find_alignment(
        tokenizer,
        [text_tokens[i] for i in spoken],
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features[spoken])),
        [num_frames[i] for i in spoken],
    )
    for i, alignment in zip(spoken, alignments, strict=True):
        window = windows[i]
        pieces = [{**segment, "seek": 0} for segment in window]
        _WindowWords(alignment, frames_per_second).add_word_timestamps(
            [pieces], tokenizer, None, 0, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0
        )
        for segment, piece in zip(window, pieces, strict=True):
            start, end = float(piece["start"]), float(piece["end"])
            segment["start"], segment["end"] = start, max(start, end)
            segment["words"] = _inside(piece.get("words", []), start, max(start, end))


def _inside(words: list[dict], start: float, end: float) -> list[dict]:
    """Words in order, clamped to [start, end] and to each other so that none overlap."""
    kept = []
    previous = start
    for word in words:
        begin = min(max(float(word["start"]), previous), end)
        finish = min(max(float(word["end"]), begin), end)
        kept.append(
            {
                "word": word["word"],
                "start": round(begin, 3),
                "end": round(finish, 3),
                "probability": round(float(word["probability"]), 4),
            }
        )
        previous = finish
    return kept
