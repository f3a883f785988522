"""The summarization request schema: limits at the edge, shared by the HTTP and gRPC fronts."""

import functools

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.results import LongInput
from gateway.validation import TextLimits, texts_field
from samo.contracts.summarizer import MAX_BEAMS, MAX_NEW_TOKENS
from samo.settings import GatewaySettings


class SummarizeRequestFields(BaseModel):
    """What a summarization request holds, for the type checker and the code that reads it; requests
    are validated with `summary_request_model(settings)`, its subclass with the limits and the checks."""

    texts: list[str]
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    model: str | None = None
    long_input: LongInput = "truncate"


def summary_request_model(settings: GatewaySettings) -> type[SummarizeRequestFields]:
    """The request schema with this process's limits (one class per limits, `TextLimits`)."""
    return _summary_request_model(TextLimits.of(settings))


@functools.cache
def _summary_request_model(limits: TextLimits) -> type[SummarizeRequestFields]:
    texts_type = texts_field(limits)

    class SummarizeRequest(SummarizeRequestFields):
        model_config = ConfigDict(extra="forbid")

        texts: texts_type  # type: ignore[valid-type]
        max_new_tokens: int | None = Field(
            default=None,
            ge=1,
            le=MAX_NEW_TOKENS,
            description="Summary length bound in tokens; default: the model's own (3 sentences for extractive).",
        )
        min_new_tokens: int | None = Field(
            default=None,
            ge=0,
            le=MAX_NEW_TOKENS,
            description="Summary length floor in tokens; default: the model's.",
        )
        num_beams: int | None = Field(
            default=None,
            ge=1,
            le=MAX_BEAMS,
            description="Beam width (abstractive models); default: the checkpoint's.",
        )
        model: str | None = Field(
            default=None,
            min_length=1,
            max_length=128,
            description="An installed abstractive model or `extractive`; default: the server's default.",
        )
        long_input: LongInput = Field(
            default="truncate",
            description="Texts past the model's input limit: truncated (flagged `truncated`), or summarized "
            "in chunks whose summaries are summarized again.",
        )

        @model_validator(mode="after")
        def _min_below_max(self) -> "SummarizeRequest":
            if (
                self.max_new_tokens is not None
                and self.min_new_tokens is not None
                and self.min_new_tokens > self.max_new_tokens
            ):
                raise ValueError(
                    f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
                )
            return self

    return SummarizeRequest
