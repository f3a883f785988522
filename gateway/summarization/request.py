"""The summarization request schema: limits at the edge, shared by the HTTP and gRPC fronts."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from samo.settings import GatewaySettings

MAX_NEW_TOKENS = 1024
MAX_BEAMS = 16


def summary_request_model(settings: GatewaySettings) -> type[BaseModel]:
    text = Annotated[str, StringConstraints(strict=True, max_length=settings.max_text_chars)]

    class SummarizeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        texts: list[text] = Field(
            min_length=1,
            max_length=settings.max_texts,
            description=f"1 to {settings.max_texts} texts, each up to {settings.max_text_chars} characters.",
        )
        max_new_tokens: int | None = Field(
            None, ge=1, le=MAX_NEW_TOKENS, description="Summary length bound in tokens; default: 3 sentences."
        )
        min_new_tokens: int = Field(0, ge=0, le=MAX_NEW_TOKENS, description="Summary length floor in tokens.")
        num_beams: int = Field(1, ge=1, le=MAX_BEAMS, description="Beam width (abstractive models).")
        model: str | None = Field(None, min_length=1, max_length=128, description="`extractive` (default).")

        @field_validator("texts")
        @classmethod
        def _no_blank_texts(cls, texts: list[str]) -> list[str]:
            blank = [str(i) for i, t in enumerate(texts) if not t.strip()]
            if blank:
                raise ValueError(f"texts at positions {', '.join(blank)} are empty or whitespace only")
            return texts

        @model_validator(mode="after")
        def _min_below_max(self) -> "SummarizeRequest":
            if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
                raise ValueError(
                    f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
                )
            return self

    return SummarizeRequest
