"""An exported emotion model as the gateway sees it: card, thresholds and fast tokenizer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from gateway.repository import cards_for_task
from samo.contracts.emotion import (
    ATTENTION_MASK,
    INPUT_IDS,
    TOKEN_TYPE_IDS,
    TOKENIZER_DIR,
    EmotionModelCard,
    Thresholds,
)

logger = logging.getLogger(__name__)

# Without ragged batching Triton batches only equal shapes; rounding lengths up makes them meet.
NON_RAGGED_LENGTH_MULTIPLE = 16


@dataclass(frozen=True)
class EncodedTexts:
    inputs: dict[str, np.ndarray]
    truncated: tuple[bool, ...]
    token_counts: tuple[int, ...]


@dataclass(frozen=True)
class EmotionModel:
    name: str
    version: str
    card: EmotionModelCard
    thresholds: np.ndarray
    tokenizer: Tokenizer

    @classmethod
    def load(cls, model_dir: Path) -> EmotionModel:
        card = EmotionModelCard.read(model_dir)
        thresholds = np.asarray(Thresholds.read(model_dir).for_labels(card.labels), dtype=np.float32)
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_DIR / "tokenizer.json"))
        # Exported tokenizer.json files may carry fixed padding (MiniLM's pads to 128): pad per request instead.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=card.max_length)
        versions = sorted(
            (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
        )
        return cls(
            name=model_dir.name,
            version=str(versions[0]) if versions else "1",
            card=card,
            thresholds=thresholds,
            tokenizer=tokenizer,
        )

    def encode(self, texts: Sequence[str]) -> EncodedTexts:
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        width = max(lengths)
        if not self.card.contract.ragged:
            width = min(
                -(-width // NON_RAGGED_LENGTH_MULTIPLE) * NON_RAGGED_LENGTH_MULTIPLE, self.card.max_length
            )
        ids = np.full((len(texts), width), self.card.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        types = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : lengths[row]] = encoding.ids
            mask[row, : lengths[row]] = 1
            types[row, : lengths[row]] = encoding.type_ids
        inputs = {INPUT_IDS: ids, ATTENTION_MASK: mask}
        if self.card.token_type_ids:
            inputs[TOKEN_TYPE_IDS] = types
        return EncodedTexts(
            inputs=inputs,
            truncated=tuple(bool(e.overflowing) for e in encodings),
            token_counts=tuple(lengths),
        )


def discover_emotion_models(repository: Path) -> dict[str, EmotionModel]:
    """Every folder in the repository whose model card says it is an emotion model."""
    models: dict[str, EmotionModel] = {}
    if not repository.is_dir():
        logger.warning("model repository %s does not exist", repository)
    for model_dir in cards_for_task(repository, "emotion"):
        try:
            models[model_dir.name] = EmotionModel.load(model_dir)
        except (OSError, ValueError) as exc:
            logger.error("skipping model %s: %s", model_dir.name, exc)
    return models
