"""The summarization request schema: limits at the edge, shared by the HTTP and gRPC fronts."""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.validation import texts_field
from samo.settings import GatewaySettings

MAX_NEW_TOKENS = 1024
MAX_BEAMS = 16


def summary_request_model(settings: GatewaySettings) -> type[BaseModel]:
    texts_type = texts_field(settings)

    class SummarizeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        texts: texts_type  # type: ignore[valid-type]
        max_new_tokens: int | None = Field(
            None, ge=1, le=MAX_NEW_TOKENS, description="Summary length bound in tokens; default: 3 sentences."
        )
        min_new_tokens: int = Field(0, ge=0, le=MAX_NEW_TOKENS, description="Summary length floor in tokens.")
        num_beams: int = Field(1, ge=1, le=MAX_BEAMS, description="Beam width (abstractive models).")
        model: str | None = Field(None, min_length=1, max_length=128, description="`extractive` (default).")

        @model_validator(mode="after")
        def _min_below_max(self) -> "SummarizeRequest":
            if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
                raise ValueError(
                    f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
                )
            return self

    return SummarizeRequest
