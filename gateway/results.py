"""The gateway's answers: one frozen type per result shape.

The services return these; the HTTP routes declare them as response models and send `body()`; the
typed clients parse answers into them; `gateway.grpc_api.convert` maps them to and from `samo.v1`.
This module imports only pydantic and the Whisper contract, so the client needs no server stack.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from samo.contracts.whisper import DecodeOptions, Word

LongInput = Literal["truncate", "chunk"]
JournalSource = Literal["text", "audio"]


class Result(BaseModel):
    # Answers always carry every field, defaults included: the schema says so.
    model_config = ConfigDict(
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_name=True,
        json_schema_serialization_defaults_required=True,
    )

    def _dump_options(self) -> dict[str, Any]:
        return {"by_alias": True}

    def body(self) -> dict[str, Any]:
        """The JSON answer: API field names, without the fields the API does not send."""
        return self.model_dump(mode="json", **self._dump_options())

    def body_json(self) -> bytes:
        """`body()` encoded, by pydantic-core: 5 us for an emotion answer where `json.dumps(body())`
        takes 26 us, on the path that limits the gateway's throughput."""
        return self.model_dump_json(**self._dump_options()).encode()


# Emotions


class EmotionOptions(Result):
    threshold: float | None = None
    """Replaces every per-label threshold when set."""
    top_k: int | None = None
    """Keeps at most this many labels above threshold."""
    model: str | None = Field(default=None, exclude=True)
    """The model asked for (not sent back: `model` in the result names the one used)."""


class LabelScore(Result):
    label: str
    score: float


class TextEmotions(Result):
    labels: tuple[LabelScore, ...]
    """Labels at or above their threshold, highest score first."""
    scores: dict[str, float]
    """Every label's score in [0, 1], in the model's label order."""
    truncated: bool
    """The text was longer than the model's token limit and was cut."""
    tokens: int
    """Tokens the model saw, special tokens included."""


class ModelInfo(Result):
    name: str
    version: str
    kind: str
    """`fine-tuned`, or `zero-shot` for the embedded prototype model."""
    source: str
    description: str


class EmotionResult(Result):
    model: ModelInfo
    results: tuple[TextEmotions, ...]
    """One entry per input text, in input order."""
    options: EmotionOptions


# Transcription


class Segment(Result):
    """Times in seconds from the audio's start (a Triton window's own segments are `WindowSegment`)."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()
    """Empty unless word timestamps were asked for."""


class TranscriptionModelInfo(Result):
    name: str
    version: str
    backend: str
    source: str


class Transcript(Result):
    text: str
    segments: tuple[Segment, ...]
    duration: float
    """Seconds of audio."""
    language: str
    language_probability: float
    model: TranscriptionModelInfo
    options: DecodeOptions = Field(default_factory=DecodeOptions, exclude=True)
    """The decoding options used (not sent: the caller chose them)."""


class OpenAITranscription(Result):
    """OpenAI's `json` response format."""

    text: str


class OpenAIWord(Result):
    word: str
    """The word without its leading space; punctuation stays with it."""
    start: float
    end: float


class OpenAISegment(Result):
    """Token ids and compression ratios are not tracked: left empty."""

    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    temperature: float
    avg_logprob: float
    compression_ratio: float | None = None
    no_speech_prob: float


class OpenAIVerboseTranscription(Result):
    """OpenAI's `verbose_json` response format: `segments` unless only words were asked for, `words`
    when they were."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    task: str
    language: str
    """The language's English name."""
    duration: float
    text: str
    words: tuple[OpenAIWord, ...] | None = None
    segments: tuple[OpenAISegment, ...] | None = None

    def _dump_options(self) -> dict[str, Any]:
        return {"exclude": {k for k in ("words", "segments") if getattr(self, k) is None}}


# Summaries


class SummaryOptions(Result):
    max_new_tokens: int | None = None
    """Summary length bound, tokens; the extractive default counts the embedder's tokens. None: the
    model's own setting (3 sentences for the extractive default)."""
    min_new_tokens: int | None = None
    num_beams: int | None = None
    """Beam search width for abstractive models (None: the checkpoint's); extractive does not search."""
    model: str | None = Field(default=None, exclude=True)
    """The model asked for (not sent back: `model` in the result names the one used)."""
    long_input: LongInput = "truncate"
    """Texts past an abstractive model's input limit: truncated (flagged) or summarized in chunks."""


class Summary(Result):
    text: str = Field(alias="summary")
    method: str
    """`abstractive` or `extractive`."""
    sentences: tuple[int, ...]
    """Indices of the chosen sentences among the text's sentences (extractive)."""
    sentence_count: int
    truncated: bool
    """Input was cut: past an abstractive model's limit, or a sentence past the embedder's."""
    tokens: int | None = None
    """New tokens generated (abstractive)."""
    chunks: int = 1
    """Inputs summarized before the final pass (long input summarized in chunks)."""


class SummaryModelInfo(Result):
    name: str
    method: str
    version: str
    source: str


class SummaryResult(Result):
    model: SummaryModelInfo
    results: tuple[Summary, ...]
    """One entry per input text, in input order."""
    options: SummaryOptions


# Journal analysis


class SentenceEmotions(Result):
    text: str
    emotions: TextEmotions


class JournalModels(Result):
    emotion: ModelInfo | None
    summarization: SummaryModelInfo | None
    transcription: TranscriptionModelInfo | None


class JournalAnalysis(Result):
    """Empty (no emotions, no summary) when an audio entry holds no speech."""

    source: JournalSource
    text: str
    transcript: Transcript | None
    emotions: TextEmotions | None
    """The whole entry's emotions."""
    sentences: tuple[SentenceEmotions, ...]
    summary: Summary | None
    models: JournalModels


# Tenants: managed API keys and usage (gateway/security/managed_keys.py, gateway/usage)


class ApiKeyInfo(Result):
    """A managed API key as listed: never the key itself, which only its creator saw once."""

    id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    prefix: str
    """The key's first characters (`samo_1a2b3c4d`): how to recognise it in a log or a leak report."""
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


class NewApiKey(ApiKeyInfo):
    key: str
    """The key: shown in this answer only (the gateway stores its SHA-256)."""


class ApiKeyList(Result):
    keys: tuple[ApiKeyInfo, ...]


class UsageRow(Result):
    """What one group of answered requests used: the group's fields are set, the rest are null."""

    tenant: str | None = None
    operation: str | None = None
    model: str | None = None
    status: str | None = None
    day: str | None = None
    """`YYYY-MM-DD` (UTC)."""
    requests: int
    texts: int
    tokens: int
    audio_seconds: float


class UsageReport(Result):
    start: datetime
    end: datetime
    group_by: tuple[str, ...]
    rows: tuple[UsageRow, ...]
