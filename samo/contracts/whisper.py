"""Whisper transcription: the Triton model's contract, its model card and the decoding options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from samo.contracts.cards import CARD_FILE
from samo.contracts.tensors import DataType, ModelContract, TensorSpec

AUDIO = "audio"
OPTIONS = "options"
RESULT = "result"
SAMPLE_RATE = 16000
"""Hz; every Whisper model hears 16 kHz mono audio."""
# Whisper's encoder sees 30 s windows; longer audio is split at pauses in the gateway first.
WINDOW_SECONDS = 30.0
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)
MAX_BEAMS = 10
CT2_DIR = "ct2"
"""Where a CTranslate2 Whisper model sits inside its Triton version folder."""


def max_prompt_tokens(context_tokens: int) -> int:
    """Whisper's limit for previous text in the prompt: half the decoder context, minus one
    (223 of the 448 tokens every released Whisper has)."""
    return context_tokens // 2 - 1


@dataclass(frozen=True)
class WhisperContract:
    """One audio window (16 kHz mono float32, at most 30 s) and its decoding options in, JSON out.

    Audio is ragged: windows of any length share a dynamic batch and are decoded in one batched
    generate call. Options and result are JSON strings, parsed against `DecodeOptions` and
    `WindowTranscript`.
    """

    @property
    def model(self) -> ModelContract:
        return ModelContract(
            inputs=(
                TensorSpec(AUDIO, DataType.FP32, (-1,), ("batch_size", "samples"), ragged=True),
                TensorSpec(OPTIONS, DataType.BYTES, (1,), ("batch_size", "one")),
            ),
            outputs=(TensorSpec(RESULT, DataType.BYTES, (1,), ("batch_size", "one")),),
        )


class DecodeOptions(BaseModel):
    """How to decode one window. Requests with equal generate settings are decoded together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    language: str | None = Field(
        default=None, description="ISO 639-1 code; None detects it (multilingual models)."
    )
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int = Field(default=5, ge=1, le=MAX_BEAMS)
    temperature: float = Field(default=0.0, ge=0.0, le=1.0, description="0: beam search; above: sampling.")
    initial_prompt: str | None = Field(
        default=None, max_length=1000, description="Text that conditions the decoder."
    )
    without_timestamps: bool = False
    word_timestamps: bool = Field(
        default=False,
        description="Words with start/end per segment (backends whose card says `word_timestamps`).",
    )
    # Filled in by the gateway, not a caller: left out of the JSON schema (and the OpenAPI document).
    prefix: SkipJsonSchema[str | None] = Field(
        default=None,
        max_length=2000,
        description="Text the decoder is forced to begin with (the words of the window's audio that are "
        "already known: a live session's earlier turns and confirmed words); the answer leaves it out. "
        "CTranslate2 backends, without timestamps only.",
    )
    window_s: SkipJsonSchema[float | None] = Field(
        default=None,
        gt=0.0,
        le=WINDOW_SECONDS,
        description="Seconds the encoder hears: the window's audio padded with silence to this length "
        "(rounded up to whole seconds, never shorter than the audio) instead of to 30 s. A short window "
        "encodes several times faster and its decoder steps attend to fewer frames. None: the 30 s window "
        "Whisper was trained on. CTranslate2 backends only.",
    )
    speech: SkipJsonSchema[tuple[tuple[float, float], ...]] = Field(
        default=(),
        max_length=1000,
        description="Where the gateway's VAD heard speech in this window (seconds from its start). With "
        "timestamps, a backend that can (CTranslate2) decodes the speech its segments leave out once more "
        "from the same encoder output, starting at the gap, before it answers; the gateway checks "
        "coverage either way and decodes what is still missing as a window of its own.",
    )

    @field_validator("speech")
    @classmethod
    def _spans_inside_a_window(
        cls, spans: tuple[tuple[float, float], ...]
    ) -> tuple[tuple[float, float], ...]:
        if any(not 0.0 <= start <= end <= WINDOW_SECONDS for start, end in spans):
            raise ValueError(f"speech spans must satisfy 0 <= start <= end <= {WINDOW_SECONDS:.0f}")
        return spans


class Word(BaseModel):
    """One word of a segment: its text as decoded (a leading space included) and its times."""

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    word: str
    probability: float


class WindowSegment(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


class WindowTranscript(BaseModel):
    """What the Triton model returns for one window; times are relative to the window."""

    model_config = ConfigDict(frozen=True)

    language: str
    language_probability: float
    segments: tuple[WindowSegment, ...]


class WhisperModelCard(BaseModel):
    """What the gateway needs to know about an installed Whisper model (`samo.json`)."""

    model_config = ConfigDict(frozen=True)

    task: Literal["transcription"] = "transcription"
    backend: Literal["ctranslate2", "onnx"]
    source: str
    multilingual: bool
    languages: tuple[str, ...]
    compute_type: str
    target: Literal["cpu", "gpu"] = "cpu"
    word_timestamps: bool = False
    """Whether the served model computes word timestamps (cards written before it existed: no)."""
    language_names: dict[str, str] = {}
    """ISO code -> English name (`"en": "english"`), as OpenAI's `verbose_json` reports the language;
    cards written before it existed: the code stands for itself."""
    samo_version: str = ""

    def language_name(self, code: str) -> str:
        return self.language_names.get(code, code)

    @property
    def language_summary(self) -> str:
        return f"{len(self.languages)} languages" if self.multilingual else "English only"

    def write(self, model_dir: Path) -> None:
        (model_dir / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, model_dir: Path) -> WhisperModelCard:
        return cls.model_validate_json((model_dir / CARD_FILE).read_text())
