"""Request and response bodies. Limits live here, at the edge, built from the settings."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from samo.settings import GatewaySettings


class LabelScoreBody(BaseModel):
    label: str
    score: float


class TextEmotionsBody(BaseModel):
    labels: list[LabelScoreBody] = Field(
        description="Labels at or above their threshold, highest score first."
    )
    scores: dict[str, float] = Field(description="Every label's score in [0, 1].")
    truncated: bool = Field(description="The text was longer than the model's token limit and was cut.")
    tokens: int = Field(description="Tokens the model saw, special tokens included.")


class ModelBody(BaseModel):
    name: str
    version: str
    kind: str = Field(description="`fine-tuned`, or `zero-shot` for the embedded prototype model.")
    source: str
    description: str


class EmotionOptionsBody(BaseModel):
    threshold: float | None
    top_k: int | None


class EmotionResponse(BaseModel):
    model: ModelBody
    results: list[TextEmotionsBody] = Field(description="One entry per input text, in input order.")
    options: EmotionOptionsBody


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def emotion_request_model(settings: GatewaySettings) -> type[BaseModel]:
    """The request schema with this process's limits, so /docs shows the limits in force."""
    text = Annotated[str, StringConstraints(strict=True, max_length=settings.max_text_chars)]

    class EmotionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        texts: list[text] = Field(
            min_length=1,
            max_length=settings.max_texts,
            description=f"1 to {settings.max_texts} journal texts, each up to {settings.max_text_chars} characters.",
        )
        threshold: float | None = Field(
            None, ge=0.0, le=1.0, description="Replaces every per-label threshold for this request."
        )
        top_k: int | None = Field(None, ge=1, le=1000, description="Keep at most this many labels per text.")
        model: str | None = Field(None, min_length=1, max_length=128, description="Emotion model name.")

        @field_validator("texts")
        @classmethod
        def _no_blank_texts(cls, texts: list[str]) -> list[str]:
            blank = [str(i) for i, t in enumerate(texts) if not t.strip()]
            if blank:
                raise ValueError(f"texts at positions {', '.join(blank)} are empty or whitespace only")
            return texts

    return EmotionRequest
