"""The emotion request schema: limits at the edge, shared by the HTTP and gRPC fronts."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from samo.settings import GatewaySettings


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
