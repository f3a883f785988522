"""Which words of a turn are confirmed: LocalAgreement-2 over successive decodes of the turn so far.

Each partial decode of the open turn gives a hypothesis, a list of words. The words after what is
already confirmed that this hypothesis and the previous one agree on (their longest common prefix)
are confirmed and never change again, except the last `STABILITY_MARGIN` words of either; the rest is the
tail, which the next decode may revise (whisper_streaming's policy, Macháček et al. 2023, with a margin at
the end of the decoded audio). The turn's final decode then confirms everything
after the confirmed words. A hypothesis is placed after the confirmed words by aligning the two (edit
distance, Whisper's punctuation and case ignored), not by counting: a later decode may put a comma or
a word elsewhere in text already confirmed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NOT_A_LETTER = re.compile(r"[^\w']+")
STABILITY_MARGIN = 1
"""Words at the end of both decodes that are not confirmed even when they agree: a decode's last word is
at the edge of the audio it heard, often cut off mid-word, and two decodes a fraction of a second apart
guess it alike ("has to meet a" for "asked me to write"). Confirmed words are followed by this many more
in both."""


def normalized(word: str) -> str:
    return _NOT_A_LETTER.sub("", word.lower())


def continuation(confirmed: Sequence[str], hypothesis: Sequence[str], *, from_start: bool = True) -> int:
    """Where in `hypothesis` the words after `confirmed` begin (both normalized).

    `from_start`: the hypothesis decodes the turn from its start, so it begins with the confirmed words;
    otherwise (a decode of only the turn's last seconds) it may begin anywhere inside them. The
    confirmed words are aligned whole, to the hypothesis' prefix that costs fewest edits; of equally
    cheap prefixes the longest is taken (a word the decode revised counts as that word, not a new one).
    """
    rows, columns = len(confirmed), len(hypothesis)
    if rows == 0:
        return 0
    previous = list(range(columns + 1))
    for i in range(1, rows + 1):
        current = [0 if not from_start else i] + [0] * columns
        word = confirmed[i - 1]
        for j in range(1, columns + 1):
            current[j] = min(
                previous[j - 1] + (word != hypothesis[j - 1]), previous[j] + 1, current[j - 1] + 1
            )
        previous = current
    best = min(previous)
    return max(j for j, cost in enumerate(previous) if cost == best)


class Agreement:
    """One turn's confirmed words, from its partial hypotheses and its final decode."""

    def __init__(self) -> None:
        self.confirmed: list[str] = []
        self._keys: list[str] = []
        self._tail: list[str] | None = None  # the previous hypothesis' words after the confirmed ones

    def _after_confirmed(self, words: Sequence[str], from_start: bool) -> list[str]:
        keys = [normalized(word) for word in words]
        return list(words[continuation(self._keys, keys, from_start=from_start) :])

    def _confirm(self, words: Sequence[str]) -> None:
        self.confirmed += words
        self._keys += [normalized(word) for word in words]

    def hypothesis(self, words: Sequence[str], *, from_start: bool = True) -> tuple[list[str], list[str]]:
        """A partial decode's words: (words confirmed now, the tail still open)."""
        new = self._after_confirmed(words, from_start)
        previous = self._tail
        agreed = 0
        if previous is not None:
            limit = min(len(new), len(previous)) - STABILITY_MARGIN
            while agreed < limit and normalized(new[agreed]) == normalized(previous[agreed]):
                agreed += 1
        self._confirm(new[:agreed])
        self._tail = new[agreed:]
        return new[:agreed], new[agreed:]

    def final(self, words: Sequence[str]) -> list[str]:
        """The final decode's words: the ones after the confirmed words, now confirmed too."""
        rest = self._after_confirmed(words, True)
        self._confirm(rest)
        self._tail = []
        return rest


def joined(words: Sequence[str], *, after: bool) -> str:
    """Words as delta text: a space before them when they follow earlier words of the turn."""
    text = " ".join(words)
    return f" {text}" if after and text else text
