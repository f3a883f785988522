"""The emotion classifier's contract and the model card the exporter writes beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from samo.contracts.cards import CARD_FILE
from samo.contracts.tensors import DataType, ModelContract, TensorSpec
from samo.contracts.text import (
    ATTENTION_MASK,
    ENCODER_MAX_BATCH_SIZE,
    EncoderTarget,
    ragged_inputs,
    token_inputs,
)

LOGITS = "logits"

THRESHOLDS_FILE = "thresholds.json"
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class EmotionContract:
    """Token ids in, one score per label out.

    `ragged` is true for the Python-backend models (`cpu`, `gpu-torch`), which pad each dynamic batch
    themselves, so requests of any length share a batch; NVIDIA's ONNX Runtime backend needs equal
    shapes instead.
    """

    num_labels: int
    token_type_ids: bool
    ragged: bool = True

    @property
    def padding_mask(self) -> str:
        return ATTENTION_MASK

    @property
    def model(self) -> ModelContract:
        inputs = token_inputs(token_type_ids=self.token_type_ids, ragged=self.ragged)
        logits = TensorSpec(
            LOGITS, DataType.FP32, (self.num_labels,), ("batch_size", "num_labels"), label_file=LABELS_FILE
        )
        return ModelContract(inputs=inputs, outputs=(logits,))


Activation = Literal["sigmoid", "softmax", "none"]


class EmotionModelCard(BaseModel):
    """What the gateway needs to know about an exported emotion model (`samo.json`)."""

    model_config = ConfigDict(frozen=True)

    task: Literal["emotion"] = "emotion"
    kind: Literal["fine-tuned", "zero-shot"] = Field(
        description="`zero-shot`: prototype similarity, not trained on emotion labels"
    )
    source: str = Field(description="checkpoint folder or hub id the model was exported from")
    description: str = ""
    labels: tuple[str, ...]
    activation: Activation = Field(description="turns the `logits` output into probabilities")
    max_length: int = Field(gt=0, description="tokens; longer texts are truncated")
    token_type_ids: bool
    pad_token_id: int = 0
    max_batch_size: int = Field(
        default=ENCODER_MAX_BATCH_SIZE,
        gt=0,
        description="texts per Triton request (config.pbtxt max_batch_size)",
    )
    quantization: Literal["none", "int8", "fp16"] = "none"
    target: EncoderTarget = Field(
        default="cpu", description="where it runs; `gpu` takes equal-length rows only"
    )
    samo_version: str = ""

    @property
    def contract(self) -> EmotionContract:
        return EmotionContract(
            num_labels=len(self.labels), token_type_ids=self.token_type_ids, ragged=ragged_inputs(self.target)
        )

    def write(self, model_dir: Path) -> None:
        (model_dir / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")
        (model_dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in self.labels))

    @classmethod
    def read(cls, model_dir: Path) -> EmotionModelCard:
        return cls.model_validate_json((model_dir / CARD_FILE).read_text())


class Thresholds(BaseModel):
    """Per-label decision thresholds (`thresholds.json`) and where they came from."""

    model_config = ConfigDict(frozen=True)

    thresholds: dict[str, float]
    tuned_on: str | None = Field(default=None, description="validation file the thresholds were tuned on")
    micro_f1: float | None = None
    macro_f1: float | None = None

    @classmethod
    def default(cls, labels: tuple[str, ...], value: float = 0.5) -> Thresholds:
        return cls(thresholds=dict.fromkeys(labels, value))

    def for_labels(self, labels: tuple[str, ...]) -> tuple[float, ...]:
        missing = [label for label in labels if label not in self.thresholds]
        if missing:
            raise ValueError(f"{THRESHOLDS_FILE} has no threshold for: {', '.join(missing)}")
        return tuple(self.thresholds[label] for label in labels)

    def write(self, model_dir: Path) -> None:
        (model_dir / THRESHOLDS_FILE).write_text(json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def read(cls, model_dir: Path) -> Thresholds:
        return cls.model_validate_json((model_dir / THRESHOLDS_FILE).read_text())


def to_probabilities(logits: np.ndarray, activation: Activation) -> np.ndarray:
    """Scores in [0, 1] from the model's `logits` output, as the model card says."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits
