"""Journal request schemas, shared by the HTTP and gRPC fronts."""

import functools
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from samo.settings import GatewaySettings


class JournalAudioOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(default=None, min_length=2, max_length=3)
    beam_size: int = Field(default=5, ge=1, le=10)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, le=1000)
    model: str | None = Field(default=None, max_length=128)


class JournalTextFields(BaseModel):
    """What a text entry holds, for the type checker and the code that reads it; entries are validated
    with `journal_text_model(settings)`, its subclass with the limit."""

    text: str
    threshold: float | None = None
    top_k: int | None = None


def journal_text_model(settings: GatewaySettings) -> type[JournalTextFields]:
    """The text entry's schema with this process's limit (one class per limit, as `TextLimits`)."""
    return _journal_text_model(settings.max_text_chars)


@functools.cache
def _journal_text_model(max_text_chars: int) -> type[JournalTextFields]:
    class JournalText(JournalTextFields):
        model_config = ConfigDict(extra="forbid")

        text: Annotated[str, StringConstraints(strict=True, max_length=max_text_chars)] = Field(
            description=f"The entry's text, up to {max_text_chars} characters."
        )
        threshold: float | None = Field(default=None, ge=0.0, le=1.0)
        top_k: int | None = Field(default=None, ge=1, le=1000)

    return JournalText
