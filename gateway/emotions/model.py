"""An exported emotion model as the gateway sees it: card, thresholds and fast tokenizer."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.coalescing import Tokenizing
from gateway.repository import cards_for_task
from gateway.results import ModelInfo
from samo.contracts.emotion import EmotionModelCard, Thresholds
from samo.text_encoding import EncodedTexts, TokenEncoder, latest_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmotionModel:
    name: str
    version: str
    card: EmotionModelCard
    thresholds: np.ndarray
    encoder: TokenEncoder

    @classmethod
    def load(cls, model_dir: Path) -> EmotionModel:
        card = EmotionModelCard.read(model_dir)
        thresholds = np.asarray(Thresholds.read(model_dir).for_labels(card.labels), dtype=np.float32)
        encoder = TokenEncoder.for_card(model_dir, card)
        return cls(model_dir.name, latest_version(model_dir), card, thresholds, encoder)

    def encode(self, texts: Sequence[str]) -> EncodedTexts:
        return self.encoder.encode(texts)

    @functools.cached_property
    def tokenizing(self) -> Tokenizing:
        """The tokenizer as the coalescer runs it, recorded as the `emotions.tokenize` stage."""
        return Tokenizing(self.encoder, "emotions.tokenize", self.name)

    @functools.cached_property
    def info(self) -> ModelInfo:
        """What every answer says about the model (made once, not per request)."""
        card = self.card
        return ModelInfo(
            name=self.name,
            version=self.version,
            kind=card.kind,
            source=card.source,
            description=card.description,
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
