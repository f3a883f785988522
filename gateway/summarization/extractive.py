"""Extractive summaries: rank sentences by centrality, pick with maximal marginal relevance (MMR).

Centrality is a sentence's cosine similarity to the mean of all sentence embeddings. MMR trades that
off against similarity to the sentences already picked, so the summary does not repeat itself. The
picked sentences are returned in their original order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SelectionBudget:
    max_sentences: int = 3
    max_tokens: int | None = None
    """Stop before the summary would exceed this many tokens (the embedder's tokens)."""
    min_tokens: int = 0
    """Keep adding sentences, past `max_sentences`, until the summary has this many tokens."""
    relevance: float = 0.7
    """MMR weight of centrality against novelty (1: centrality only)."""


def select_sentences(
    embeddings: np.ndarray, token_counts: Sequence[int], budget: SelectionBudget
) -> list[int]:
    """Indices of the chosen sentences, ascending. `embeddings` are L2-normalized, one row per sentence."""
    count = len(embeddings)
    if count == 0:
        return []
    centroid = embeddings.mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    centrality = embeddings @ centroid
    similarity = embeddings @ embeddings.T
    chosen: list[int] = []
    tokens = 0
    candidates = set(range(count))
    while candidates:
        redundancy = similarity[:, chosen].max(axis=1) if chosen else np.zeros(count)
        scores = budget.relevance * centrality - (1 - budget.relevance) * redundancy
        best = max(candidates, key=lambda i: (scores[i], -i))
        candidates.discard(best)
        over_tokens = budget.max_tokens is not None and tokens + token_counts[best] > budget.max_tokens
        if over_tokens:
            continue  # a shorter sentence may still fit
        chosen.append(best)
        tokens += token_counts[best]
        if len(chosen) >= budget.max_sentences and tokens >= budget.min_tokens:
            break
    return sorted(chosen)


def lead(token_counts: Sequence[int], count: int) -> list[int]:
    """The lead-k baseline: the first `count` sentences."""
    return list(range(min(count, len(token_counts))))
