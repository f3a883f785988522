"""The summarization service: abstractive models generating through Triton, or the extractive
default (sentence embeddings through Triton, then central, non-redundant sentences)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.batch_calls import infer_text_batches
from gateway.coalescing import Tokenizing
from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError, not_found
from gateway.observability.metrics import record_generated_tokens, record_texts
from gateway.repository import cards_for_task
from gateway.results import Summary, SummaryModelInfo, SummaryOptions, SummaryResult
from gateway.summarization.abstractive import AbstractiveModel, Encoded
from gateway.summarization.extractive import SelectionBudget, select_sentences
from gateway.summarization.sentences import split_sentences
from gateway.triton_client import InferenceCalls
from samo.contracts.embedding import EMBEDDINGS, EmbeddingModelCard
from samo.contracts.summarizer import OPTIONS, OUTPUT_IDS, GenerationOptions
from samo.contracts.text import INPUT_IDS
from samo.text_encoding import TokenEncoder, latest_version

logger = logging.getLogger(__name__)

EXTRACTIVE = "extractive"
ABSTRACTIVE = "abstractive"
DEFAULT_SENTENCES = 3


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

    @functools.cached_property
    def tokenizing(self) -> Tokenizing:
        """The tokenizer as the coalescer runs it, recorded as the `summarization.tokenize` stage."""
        return Tokenizing(self.encoder, "summarization.tokenize", self.name)


def discover_embedder(repository: Path) -> Embedder | None:
    """The sentence embedder behind the extractive default, if exported."""
    found = cards_for_task(repository, "embedding")
    return Embedder.load(found[0]) if found else None


@dataclass(frozen=True)
class _FinalInput:
    encoded: Encoded
    chunks: int
    truncated: bool

    def summary(self, model: AbstractiveModel, text: str, tokens: np.ndarray) -> Summary:
        return Summary(
            summary=model.decode(tokens),
            method=ABSTRACTIVE,
            sentences=(),
            sentence_count=len(split_sentences(text)),
            truncated=self.truncated,
            tokens=int(tokens.size),
            chunks=self.chunks,
        )


def _generation_options(options: SummaryOptions) -> GenerationOptions:
    return GenerationOptions(
        max_new_tokens=options.max_new_tokens,
        min_new_tokens=options.min_new_tokens,
        num_beams=options.num_beams,
    )


def _generation_inputs(encoded: Encoded, generation: GenerationOptions) -> dict[str, np.ndarray]:
    options = np.array([[generation.model_dump_json(exclude_none=True).encode()]], dtype=np.object_)
    return {INPUT_IDS: encoded.ids[None, :], OPTIONS: options}


def _without_eos(tokens: np.ndarray, model: AbstractiveModel) -> np.ndarray:
    return tokens[~np.isin(tokens, model.card.eos_token_ids)]


def _abstractive_info(model: AbstractiveModel) -> SummaryModelInfo:
    card = model.card
    return SummaryModelInfo(
        name=model.name,
        method=ABSTRACTIVE,
        version=model.version,
        source=f"{card.architecture}: {card.source}",
    )


class SummarizationService:
    def __init__(
        self,
        triton: InferenceCalls,
        embedder: Embedder | None,
        abstractive: dict[str, AbstractiveModel] | None = None,
        default: str | None = None,
    ) -> None:
        self.triton = triton
        self.embedder = embedder
        self.abstractive = abstractive or {}
        # An installed abstractive model is the default unless one is named; extractive otherwise.
        self.default = default or (min(self.abstractive) if self.abstractive else EXTRACTIVE)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self.abstractive)) + ((EXTRACTIVE,) if self.embedder else ())

    def _unknown(self, name: str) -> SamoError:
        known = ", ".join(self.models) or "none installed (export the embedder: `samo export embedder`)"
        return not_found(f"unknown summarization model `{name}`; available: {known}")

    def _embedder(self, name: str) -> Embedder:
        if name != EXTRACTIVE or self.embedder is None:
            raise self._unknown(name)
        return self.embedder

    async def embed(
        self, context: RequestContext, embedder: Embedder, sentences: Sequence[str]
    ) -> tuple[np.ndarray, tuple[int, ...], tuple[bool, ...]]:
        rows = embedder.card.max_batch_size
        batches = [sentences[start : start + rows] for start in range(0, len(sentences), rows)]
        answers = await infer_text_batches(context, self.triton, embedder.tokenizing, batches, [EMBEDDINGS])
        encoded = [answer.encoded for answer in answers]
        vectors = (
            np.concatenate([a.outputs[EMBEDDINGS] for a in answers])
            if answers
            else np.zeros((0, embedder.card.dims))
        )
        if vectors.shape != (len(sentences), embedder.card.dims):
            raise SamoError(
                ErrorType.INTERNAL, f"model `{embedder.name}` returned embeddings of shape {vectors.shape}"
            )
        tokens = tuple(count for e in encoded for count in e.token_counts)
        record_texts(embedder.name, len(sentences), sum(tokens))
        truncated = tuple(flag for e in encoded for flag in e.truncated)
        return vectors.astype(np.float64), tokens, truncated

    async def summarize(
        self, context: RequestContext, texts: Sequence[str], options: SummaryOptions = SummaryOptions()
    ) -> SummaryResult:
        name = options.model or self.default
        if name in self.abstractive:
            return await self._abstractive(context, self.abstractive[name], texts, options)
        return await self._extractive(context, self._embedder(name), texts, options)

    async def _abstractive(
        self, context: RequestContext, model: AbstractiveModel, texts: Sequence[str], options: SummaryOptions
    ) -> SummaryResult:
        generation = _generation_options(options)
        results = await asyncio.gather(
            *(self._summarize_text(context, model, t, generation, options) for t in texts)
        )
        return SummaryResult(model=_abstractive_info(model), results=tuple(results), options=options)

    async def _summarize_text(
        self,
        context: RequestContext,
        model: AbstractiveModel,
        text: str,
        generation: GenerationOptions,
        options: SummaryOptions,
    ) -> Summary:
        final_input = await self._final_input(context, model, text, generation, options)
        tokens = await self._generate(context, model, final_input.encoded, generation)
        return final_input.summary(model, text, tokens)

    async def _final_input(
        self,
        context: RequestContext,
        model: AbstractiveModel,
        text: str,
        generation: GenerationOptions,
        options: SummaryOptions,
    ) -> _FinalInput:
        """The input of the last generation pass: the text, or the joined summaries of its chunks."""
        whole = model.encode(text)
        if not (whole.truncated and options.long_input == "chunk"):
            return _FinalInput(whole, 1, whole.truncated)
        pieces = model.chunks(text)
        partial = await asyncio.gather(
            *(self._generate(context, model, piece, generation) for piece in pieces)
        )
        joined = model.encode(" ".join(model.decode(tokens) for tokens in partial))
        return _FinalInput(joined, len(pieces), joined.truncated or any(piece.truncated for piece in pieces))

    async def stream(
        self, context: RequestContext, text: str, options: SummaryOptions = SummaryOptions()
    ) -> AsyncIterator[str | SummaryResult]:
        """The summary of one text as it is generated: new text as it appears, then the whole result.

        Abstractive models with a streaming variant stream their last pass; the extractive summarizer
        (nothing to stream) sends its result at once.
        """
        name = options.model or self.default
        model = self.abstractive.get(name)
        if model is None or model.card.stream_model is None:
            yield await self.summarize(context, [text], options)
            return
        generation = _generation_options(options)
        final_input = await self._final_input(context, model, text, generation, options)
        tokens: list[int] = []
        shown = ""
        async for output in self.triton.stream(
            context,
            model.card.stream_model,
            _generation_inputs(final_input.encoded, generation),
            [OUTPUT_IDS],
        ):
            tokens.extend(output[OUTPUT_IDS].reshape(-1).tolist())
            current = model.decode(_without_eos(np.asarray(tokens, dtype=np.int64), model))
            # Detokenizing can rewrite the tail (merged pieces): send text only once it is settled.
            if len(current) > len(shown) and current.startswith(shown):
                yield current[len(shown) :]
                shown = current
        summary = final_input.summary(model, text, _without_eos(np.asarray(tokens, dtype=np.int64), model))
        record_generated_tokens(model.name, summary.tokens or 0)
        yield SummaryResult(model=_abstractive_info(model), results=(summary,), options=options)

    async def _generate(
        self,
        context: RequestContext,
        model: AbstractiveModel,
        encoded: Encoded,
        generation: GenerationOptions,
    ) -> np.ndarray:
        outputs = await self.triton.infer(
            context, model.name, _generation_inputs(encoded, generation), [OUTPUT_IDS]
        )
        tokens = _without_eos(outputs[OUTPUT_IDS].reshape(-1), model)
        record_generated_tokens(model.name, int(tokens.size))
        return tokens

    async def _extractive(
        self, context: RequestContext, embedder: Embedder, texts: Sequence[str], options: SummaryOptions
    ) -> SummaryResult:
        split = [split_sentences(text) for text in texts]
        flat = [sentence for sentences in split for sentence in sentences]
        vectors, tokens, truncated = await self.embed(context, embedder, flat)
        if options.max_new_tokens is None:
            budget = SelectionBudget(max_sentences=DEFAULT_SENTENCES, min_tokens=options.min_new_tokens or 0)
        else:
            budget = SelectionBudget(
                max_sentences=len(flat) or 1,
                max_tokens=options.max_new_tokens,
                min_tokens=options.min_new_tokens or 0,
            )
        results = []
        offset = 0
        for sentences in split:
            rows = slice(offset, offset + len(sentences))
            chosen = select_sentences(vectors[rows], tokens[rows], budget)
            results.append(
                Summary(
                    summary=" ".join(sentences[i] for i in chosen),
                    method=EXTRACTIVE,
                    sentences=tuple(chosen),
                    sentence_count=len(sentences),
                    truncated=any(truncated[rows]),
                )
            )
            offset += len(sentences)
        info = SummaryModelInfo(
            name=EXTRACTIVE,
            method=EXTRACTIVE,
            version=embedder.version,
            source=f"MMR over {embedder.card.source}",
        )
        return SummaryResult(model=info, results=tuple(results), options=options)
