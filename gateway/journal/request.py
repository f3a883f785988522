"""Journal request schemas, shared by the HTTP and gRPC fronts."""

import functools
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from samo.settings import GatewaySettings


class JournalAudioOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(None, min_length=2, max_length=3)
    beam_size: int = Field(5, ge=1, le=10)
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, le=1000)
    model: str | None = Field(None, max_length=128)


def journal_text_model(settings: GatewaySettings) -> type[BaseModel]:
    """The text entry's schema with this process's limit (one class per limit, as `TextLimits`)."""
    return _journal_text_model(settings.max_text_chars)


@functools.cache
def _journal_text_model(max_text_chars: int) -> type[BaseModel]:
    entry = Annotated[str, StringConstraints(strict=True, max_length=max_text_chars)]

    class JournalText(BaseModel):
        model_config = ConfigDict(extra="forbid")

        text: entry = Field(description=f"The entry's text, up to {max_text_chars} characters.")
        threshold: float | None = Field(None, ge=0.0, le=1.0)
        top_k: int | None = Field(None, ge=1, le=1000)

    return JournalText
