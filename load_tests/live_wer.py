"""Where a live session's word errors come from: each word of its transcript is tagged with the decode
that confirmed it (a partial, while the user spoke, or the turn's final decode), the transcript is aligned
with the reference, and the errors are counted by tag. Deltas are append-only, so a word a partial
confirmed wrongly stays wrong: this says how much of the live word error rate that is.

Counts only, no text: the recordings are synthetic, but the same code may run on users' sessions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from load_tests.live_client import LiveRun
from samo.evaluation.wer import normalized_words

EARLY = "partial"
FINAL = "final"


@dataclass(frozen=True)
class AttributedErrors:
    reference_words: int
    words: Counter[str]
    """Transcript words by the decode that confirmed them."""
    errors: Counter[str]
    """Substitutions and insertions by the decode of the transcript word; a deletion by the decode of the
    transcript word before it."""

    def rate(self, tag: str) -> float:
        """The share of the word error rate that words of `tag` make."""
        return self.errors[tag] / max(self.reference_words, 1)

    def columns(self) -> dict[str, float]:
        total = sum(self.words.values())
        return {
            "early_words": self.words[EARLY] / max(total, 1),
            "wer_early": self.rate(EARLY),
            "wer_final_part": self.rate(FINAL),
        }


def tagged_words(runs: list[LiveRun]) -> list[tuple[str, str]]:
    """Every session's transcript as (normalized word, tag), turn after turn."""
    tagged: list[tuple[str, str]] = []
    for run in runs:
        for item in run.items():
            early = item.confirmed_early
            tagged += [(word, EARLY) for word in normalized_words(early)]
            tagged += [(word, FINAL) for word in normalized_words(item.text[len(early) :])]
    return tagged


def attributed_errors(reference: str, runs: list[LiveRun]) -> AttributedErrors:
    ref = normalized_words(reference)
    hyp = tagged_words(runs)
    rows, columns = len(ref), len(hyp)
    cost = [[0] * (columns + 1) for _ in range(rows + 1)]
    for i in range(rows + 1):
        cost[i][0] = i
    for j in range(columns + 1):
        cost[0][j] = j
    for i in range(1, rows + 1):
        for j in range(1, columns + 1):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1][0]), cost[i - 1][j] + 1, cost[i][j - 1] + 1
            )
    errors: Counter[str] = Counter()
    i, j = rows, columns
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1][0]):
            errors[hyp[j - 1][1]] += ref[i - 1] != hyp[j - 1][0]
            i, j = i - 1, j - 1
        elif j and cost[i][j] == cost[i][j - 1] + 1:
            errors[hyp[j - 1][1]] += 1
            j -= 1
        else:
            errors[hyp[j - 1][1] if j else FINAL] += 1
            i -= 1
    return AttributedErrors(rows, Counter(tag for _, tag in hyp), errors)
