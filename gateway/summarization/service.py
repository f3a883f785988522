"""The summarization service: sentences -> embeddings through Triton -> extractive selection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.errors import ErrorType, SamoError, not_found
from gateway.repository import cards_for_task
from gateway.summarization.extractive import SelectionBudget, select_sentences
from gateway.summarization.sentences import split_sentences
from gateway.text_encoding import TokenEncoder, latest_version
from gateway.triton_client import TritonClient
from samo.contracts.embedding import EMBEDDINGS, EmbeddingModelCard

logger = logging.getLogger(__name__)

EXTRACTIVE = "extractive"
DEFAULT_SENTENCES = 3
ROWS_PER_REQUEST = 64  # the embedder's max_batch_size


@dataclass(frozen=True)
class SummaryOptions:
    max_new_tokens: int | None = None
    """Summary length bound, tokens; the extractive default counts the embedder's tokens."""
    min_new_tokens: int = 0
    num_beams: int = 1
    """Beam search width for abstractive models; the extractive default does not search."""
    model: str | None = None


@dataclass(frozen=True)
class Summary:
    text: str
    sentences: tuple[int, ...]
    """Indices of the chosen sentences among the text's sentences."""
    sentence_count: int
    truncated: bool
    """A sentence was longer than the embedder's token limit and was embedded from its start."""


@dataclass(frozen=True)
class SummaryModelInfo:
    name: str
    method: str
    version: str
    source: str


@dataclass(frozen=True)
class SummaryResult:
    results: tuple[Summary, ...]
    model: SummaryModelInfo
    options: SummaryOptions


@dataclass(frozen=True)
class Embedder:
    name: str
    version: str
    card: EmbeddingModelCard
    encoder: TokenEncoder

    @classmethod
    def load(cls, model_dir: Path) -> Embedder:
        card = EmbeddingModelCard.read(model_dir)
        encoder = TokenEncoder.for_card(model_dir, card)
        return cls(model_dir.name, latest_version(model_dir), card, encoder)


def discover_embedder(repository: Path) -> Embedder | None:
    found = cards_for_task(repository, "embedding")
    return Embedder.load(found[0]) if found else None


class SummarizationService:
    def __init__(self, triton: TritonClient, embedder: Embedder | None) -> None:
        self.triton = triton
        self.embedder = embedder

    @property
    def models(self) -> tuple[str, ...]:
        return (EXTRACTIVE,) if self.embedder else ()

    def _embedder(self, name: str | None) -> Embedder:
        if (name or EXTRACTIVE) not in self.models or self.embedder is None:
            known = ", ".join(self.models) or "none installed (export the embedder: `samo export embedder`)"
            raise not_found(f"unknown summarization model `{name or EXTRACTIVE}`; available: {known}")
        return self.embedder

    async def embed(
        self, embedder: Embedder, sentences: Sequence[str]
    ) -> tuple[np.ndarray, tuple[int, ...], tuple[bool, ...]]:
        encoded = [
            embedder.encoder.encode(sentences[start : start + ROWS_PER_REQUEST])
            for start in range(0, len(sentences), ROWS_PER_REQUEST)
        ]
        outputs = await asyncio.gather(
            *(self.triton.infer(embedder.name, e.inputs, [EMBEDDINGS]) for e in encoded)
        )
        vectors = (
            np.concatenate([o[EMBEDDINGS] for o in outputs]) if outputs else np.zeros((0, embedder.card.dims))
        )
        if vectors.shape != (len(sentences), embedder.card.dims):
            raise SamoError(
                ErrorType.INTERNAL, f"model `{embedder.name}` returned embeddings of shape {vectors.shape}"
            )
        tokens = tuple(count for e in encoded for count in e.token_counts)
        truncated = tuple(flag for e in encoded for flag in e.truncated)
        return vectors.astype(np.float64), tokens, truncated

    async def summarize(
        self, texts: Sequence[str], options: SummaryOptions = SummaryOptions()
    ) -> SummaryResult:
        embedder = self._embedder(options.model)
        split = [split_sentences(text) for text in texts]
        flat = [sentence for sentences in split for sentence in sentences]
        vectors, tokens, truncated = await self.embed(embedder, flat)
        if options.max_new_tokens is None:
            budget = SelectionBudget(max_sentences=DEFAULT_SENTENCES, min_tokens=options.min_new_tokens)
        else:
            budget = SelectionBudget(
                max_sentences=len(flat) or 1,
                max_tokens=options.max_new_tokens,
                min_tokens=options.min_new_tokens,
            )
        results = []
        offset = 0
        for sentences in split:
            rows = slice(offset, offset + len(sentences))
            chosen = select_sentences(vectors[rows], tokens[rows], budget)
            results.append(
                Summary(
                    text=" ".join(sentences[i] for i in chosen),
                    sentences=tuple(chosen),
                    sentence_count=len(sentences),
                    truncated=any(truncated[rows]),
                )
            )
            offset += len(sentences)
        info = SummaryModelInfo(
            EXTRACTIVE, "extractive", embedder.version, f"MMR over {embedder.card.source}"
        )
        return SummaryResult(results=tuple(results), model=info, options=options)
