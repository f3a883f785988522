"""Sentence splitting for journal text: punctuation followed by a capital, and line breaks."""

from __future__ import annotations

import re

# Titles and Latin abbreviations that end in a period without ending the sentence.
_ABBREVIATIONS = (
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "approx",
    "no",
)
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_LINE_BREAK = re.compile(r"\s*\n\s*\n?\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences in order, stripped, none empty. Paragraph and line breaks always split."""
    sentences: list[str] = []
    for block in _LINE_BREAK.split(text.strip()):
        start = 0
        for match in _BOUNDARY.finditer(block):
            candidate = block[start : match.start()].strip()
            last_word = candidate.rsplit(maxsplit=1)[-1].rstrip(".").lower() if candidate else ""
            if last_word in _ABBREVIATIONS or (re.fullmatch(r"[a-z]", last_word) and last_word != "i"):
                continue  # "Dr. Smith", "J. Doe": not a boundary ("so am I." is)
            sentences.append(candidate)
            start = match.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if s]
