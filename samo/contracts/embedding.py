"""The sentence embedder's contract and card (MiniLM embeddings for the extractive summarizer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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

EMBEDDINGS = "embeddings"


@dataclass(frozen=True)
class EmbeddingContract:
    """Token ids in, one L2-normalized vector per text out (mean pooling happens inside the graph)."""

    dims: int
    token_type_ids: bool = True
    ragged: bool = True

    @property
    def padding_mask(self) -> str:
        return ATTENTION_MASK

    @property
    def model(self) -> ModelContract:
        output = TensorSpec(EMBEDDINGS, DataType.FP32, (self.dims,), ("batch_size", "dims"))
        return ModelContract(
            inputs=token_inputs(token_type_ids=self.token_type_ids, ragged=self.ragged), outputs=(output,)
        )


class EmbeddingModelCard(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: Literal["embedding"] = "embedding"
    source: str
    dims: int
    max_length: int
    token_type_ids: bool = True
    pad_token_id: int = 0
    max_batch_size: int = Field(
        default=ENCODER_MAX_BATCH_SIZE,
        gt=0,
        description="texts per Triton request (config.pbtxt max_batch_size)",
    )
    target: EncoderTarget = Field(
        default="cpu", description="where it runs; `gpu` takes equal-length rows only"
    )
    samo_version: str = ""

    @property
    def contract(self) -> EmbeddingContract:
        return EmbeddingContract(
            dims=self.dims, token_type_ids=self.token_type_ids, ragged=ragged_inputs(self.target)
        )

    def write(self, model_dir: Path) -> None:
        (model_dir / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, model_dir: Path) -> EmbeddingModelCard:
        return cls.model_validate_json((model_dir / CARD_FILE).read_text())
