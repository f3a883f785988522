"""Tokenizing texts for the token-encoder models (emotion classifiers, the sentence embedder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from samo.contracts.text import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, TOKENIZER_DIR

# Without ragged batching Triton batches only equal shapes; rounding lengths up makes them meet.
NON_RAGGED_LENGTH_MULTIPLE = 16


@dataclass(frozen=True)
class EncodedTexts:
    inputs: dict[str, np.ndarray]
    truncated: tuple[bool, ...]
    token_counts: tuple[int, ...]


class EncoderCard(Protocol):
    """The model-card fields tokenization needs (emotion and embedding cards have them)."""

    max_length: int
    pad_token_id: int
    token_type_ids: bool

    @property
    def contract(self) -> Any: ...


@dataclass(frozen=True)
class TokenEncoder:
    tokenizer: Tokenizer
    max_length: int
    pad_token_id: int
    token_type_ids: bool
    ragged: bool

    @classmethod
    def load(
        cls, model_dir: Path, *, max_length: int, pad_token_id: int, token_type_ids: bool, ragged: bool
    ) -> TokenEncoder:
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_DIR / "tokenizer.json"))
        # Exported tokenizer.json files may carry fixed padding (MiniLM's pads to 128): pad per request.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        return cls(tokenizer, max_length, pad_token_id, token_type_ids, ragged)

    @classmethod
    def for_card(cls, model_dir: Path, card: EncoderCard) -> TokenEncoder:
        return cls.load(
            model_dir,
            max_length=card.max_length,
            pad_token_id=card.pad_token_id,
            token_type_ids=card.token_type_ids,
            ragged=card.contract.ragged,
        )

    def encode(self, texts: Sequence[str]) -> EncodedTexts:
        # One text (what most requests carry) skips encode_batch's hand-off to the Rust thread pool.
        encodings = (
            [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(list(texts))
        )
        rows = [encoding.ids for encoding in encodings]  # each `.ids` builds a new list: read it once
        lengths = [len(row) for row in rows]
        width = max(lengths)
        if not self.ragged:
            width = min(-(-width // NON_RAGGED_LENGTH_MULTIPLE) * NON_RAGGED_LENGTH_MULTIPLE, self.max_length)
        if all(length == width for length in lengths):  # one text, ragged: nothing to pad
            ids = np.array(rows, dtype=np.int64)
            mask = np.ones_like(ids)
        else:
            ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, (tokens, length) in enumerate(zip(rows, lengths, strict=True)):
                ids[row, :length] = tokens
                mask[row, :length] = 1
        inputs = {INPUT_IDS: ids, ATTENTION_MASK: mask}
        if self.token_type_ids:
            types = np.zeros_like(ids)
            for row, (encoding, length) in enumerate(zip(encodings, lengths, strict=True)):
                types[row, :length] = encoding.type_ids
            inputs[TOKEN_TYPE_IDS] = types
        return EncodedTexts(
            inputs=inputs,
            truncated=tuple(bool(e.overflowing) for e in encodings),
            token_counts=tuple(lengths),
        )


def latest_version(model_dir: Path) -> str:
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    )
    return str(versions[0]) if versions else "1"
