"""The emotion request schema: limits at the edge, shared by the HTTP and gRPC fronts."""

import functools

from pydantic import BaseModel, ConfigDict, Field

from gateway.validation import TextLimits, texts_field
from samo.settings import GatewaySettings


class EmotionRequestFields(BaseModel):
    """What an emotion request holds, for the type checker and the code that reads it; requests are
    validated with `emotion_request_model(settings)`, its subclass with the limits and the messages."""

    texts: list[str]
    threshold: float | None = None
    top_k: int | None = None
    model: str | None = None


def emotion_request_model(settings: GatewaySettings) -> type[EmotionRequestFields]:
    """The request schema with this process's limits, so /docs shows the limits in force."""
    return _emotion_request_model(TextLimits.of(settings))


@functools.cache
def _emotion_request_model(limits: TextLimits) -> type[EmotionRequestFields]:
    texts_type = texts_field(limits, "journal texts")

    class EmotionRequest(EmotionRequestFields):
        model_config = ConfigDict(extra="forbid")

        texts: texts_type  # type: ignore[valid-type]
        threshold: float | None = Field(
            default=None, ge=0.0, le=1.0, description="Replaces every per-label threshold for this request."
        )
        top_k: int | None = Field(
            default=None, ge=1, le=1000, description="Keep at most this many labels per text."
        )
        model: str | None = Field(
            default=None, min_length=1, max_length=128, description="Emotion model name."
        )

    return EmotionRequest
