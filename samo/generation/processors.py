"""Logits processors, in the order transformers' `generate` applies them.

Each row of a step carries its own settings; a processor touches only the rows that ask for it, so
the common case (no penalty, no n-gram ban) costs nothing. Greedy search processes raw logits and
beam search log-probabilities, as transformers does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from samo.generation.settings import GenerationSettings, SpecialTokens

# A per-request hook that edits one row's scores in place after the standard processors (Whisper's
# timestamp rules). It sees the row's whole decoder sequence, prompt included.
RowHook = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Row:
    settings: GenerationSettings
    prompt_length: int
    hook: RowHook | None = None

    @property
    def max_length(self) -> int:
        return self.prompt_length + self.settings.max_new_tokens


def process(
    sequences: np.ndarray, scores: np.ndarray, rows: Sequence[Row], special: SpecialTokens
) -> np.ndarray:
    """Apply every processor to `scores` [rows, vocab] in place; `sequences` [rows, length] so far."""
    length = sequences.shape[1]
    eos = list(special.eos)
    for index, row in enumerate(rows):
        settings = row.settings
        tokens = sequences[index]
        values = scores[index]
        if settings.repetition_penalty != 1.0:
            _penalize_repetition(tokens, values, settings.repetition_penalty)
        if settings.no_repeat_ngram_size > 0:
            _ban_repeated_ngrams(tokens, values, settings.no_repeat_ngram_size)
        if length - row.prompt_length < settings.min_new_tokens:
            values[eos] = -np.inf
        if settings.forced_bos_token_id is not None and length == 1:
            _force(values, [settings.forced_bos_token_id])
        if settings.forced_eos_token_id is not None and length == row.max_length - 1:
            _force(values, [settings.forced_eos_token_id])
        if settings.suppress_tokens:
            values[list(settings.suppress_tokens)] = -np.inf
        if settings.begin_suppress_tokens and length == _begin_index(row):
            values[list(settings.begin_suppress_tokens)] = -np.inf
        if row.hook is not None:
            row.hook(tokens, values)
    return scores


def _begin_index(row: Row) -> int:
    # transformers counts the forced BOS token as part of the prompt when the prompt is one token.
    if row.prompt_length == 1 and row.settings.forced_bos_token_id is not None:
        return row.prompt_length + 1
    return row.prompt_length


def _penalize_repetition(tokens: np.ndarray, values: np.ndarray, penalty: float) -> None:
    seen = values[tokens]
    values[tokens] = np.where(seen < 0, seen * np.float32(penalty), seen / np.float32(penalty))


def _ban_repeated_ngrams(tokens: np.ndarray, values: np.ndarray, size: int) -> None:
    length = len(tokens)
    if length + 1 < size:
        return
    history = tokens.tolist()
    prefix = tuple(history[length + 1 - size :])
    banned = [
        history[start + size - 1]
        for start in range(length - size + 1)
        if tuple(history[start : start + size - 1]) == prefix
    ]
    if banned:
        values[banned] = -np.inf


def _force(values: np.ndarray, allowed: list[int]) -> None:
    values[:] = -np.inf
    values[allowed] = 0.0
