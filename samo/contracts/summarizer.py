"""Abstractive summarizers (T5, BART, Pegasus): the Triton model's contract, the card that carries
the checkpoint's generation settings, and the per-request generation options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from samo.contracts.cards import CARD_FILE
from samo.contracts.tensors import DataType, ModelContract, TensorSpec
from samo.contracts.text import INPUT_IDS
from samo.generation import GenerationSettings, SpecialTokens

OPTIONS = "options"
OUTPUT_IDS = "output_ids"
# transformers' summarization pipelines stop at 1024 new tokens; nothing longer is a summary.
MAX_NEW_TOKENS = 1024
MAX_BEAMS = 16
EarlyStopping = bool | Literal["never"]


@dataclass(frozen=True)
class SummarizerContract:
    """Token ids of one (prefixed, truncated) text and its generation options in, summary token ids out.

    Token ids are ragged so texts of any length share a dynamic batch; the model pads the batch
    itself. `output_ids` holds the new tokens (the end-of-sequence token included when generated); the
    streaming variant sends them a few at a time and marks the last response.
    """

    @property
    def model(self) -> ModelContract:
        return ModelContract(
            inputs=(
                TensorSpec(INPUT_IDS, DataType.INT64, (-1,), ("batch_size", "sequence_length"), ragged=True),
                TensorSpec(OPTIONS, DataType.BYTES, (1,), ("batch_size", "one")),
            ),
            outputs=(TensorSpec(OUTPUT_IDS, DataType.INT64, (-1,), ("batch_size", "new_tokens")),),
        )


class GenerationOptions(BaseModel):
    """What one request may override; unset fields take the checkpoint's own settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    min_new_tokens: int | None = Field(default=None, ge=0, le=MAX_NEW_TOKENS)
    num_beams: int | None = Field(default=None, ge=1, le=MAX_BEAMS)
    length_penalty: float | None = Field(default=None, ge=-10.0, le=10.0)
    early_stopping: EarlyStopping | None = None
    no_repeat_ngram_size: int | None = Field(default=None, ge=0, le=16)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)


class GenerationDefaults(BaseModel):
    """The checkpoint's generation settings (its generation_config), in new-token terms."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: int = Field(default=128, ge=1, le=MAX_NEW_TOKENS)
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: EarlyStopping = False
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0


class SummarizerModelCard(BaseModel):
    """What the gateway and the Triton model need to know about an installed summarizer (`samo.json`)."""

    model_config = ConfigDict(frozen=True)

    task: Literal["summarization"] = "summarization"
    architecture: str
    source: str
    prefix: str = ""
    """Text put before every input, e.g. T5's `summarize: `."""
    max_input_tokens: int
    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    defaults: GenerationDefaults = GenerationDefaults()
    stream_model: str | None = None
    """The decoupled variant that sends tokens as they are produced."""
    quantize: Literal["none", "int8"] = "none"
    target: Literal["cpu", "gpu"] = "cpu"
    samo_version: str = ""

    @property
    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens(self.decoder_start_token_id, self.eos_token_ids, self.pad_token_id)

    def settings(self, options: GenerationOptions) -> GenerationSettings:
        """Engine settings for one request: its options over the checkpoint's defaults."""
        merged = self.defaults.model_dump() | options.model_dump(exclude_none=True)
        merged["min_new_tokens"] = min(merged["min_new_tokens"], merged["max_new_tokens"])
        return GenerationSettings(
            **merged,
            forced_bos_token_id=self.forced_bos_token_id,
            forced_eos_token_id=self.forced_eos_token_id,
        )

    def write(self, model_dir: Path) -> None:
        (model_dir / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, model_dir: Path) -> SummarizerModelCard:
        return cls.model_validate_json((model_dir / CARD_FILE).read_text())
