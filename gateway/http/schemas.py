"""Request and response bodies. Limits live here, at the edge, built from the settings."""

from pydantic import BaseModel, Field


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
