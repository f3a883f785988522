"""Word error rate after Whisper's English text normalization (the convention Whisper results use)."""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalized_words(text: str) -> list[str]:
    """Words after Whisper's English normalization."""
    return _normalizer()(text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, both normalized first."""
    ref, hyp = normalized_words(reference), normalized_words(hypothesis)
    distance = np.arange(len(hyp) + 1)
    for i, word in enumerate(ref, start=1):
        previous, distance[0] = distance.copy(), i
        for j, other in enumerate(hyp, start=1):
            distance[j] = min(previous[j] + 1, distance[j - 1] + 1, previous[j - 1] + (word != other))
    return float(distance[len(hyp)]) / max(len(ref), 1)


def word_recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's words that the hypothesis has, in order (longest common subsequence),
    both normalized first: extra words around the reference cost nothing."""
    normalize = _normalizer()
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref:
        return 1.0
    common = np.zeros(len(hyp) + 1, dtype=np.int64)
    for word in ref:
        previous = common.copy()
        for j, other in enumerate(hyp, start=1):
            common[j] = previous[j - 1] + 1 if word == other else max(previous[j], common[j - 1])
    return float(common[len(hyp)]) / len(ref)
