"""Request validation shared by both transports: the same pydantic schema, the same messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationError

from gateway.errors import invalid_input
from samo.settings import GatewaySettings

Body = TypeVar("Body", bound=BaseModel)


def _location(loc: Sequence[int | str]) -> str:
    path = ""
    for part in (str(p) for p in loc if p != "body"):
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """`texts[3]: String should have at most 100 characters`; pydantic's `input` is left out, since
    it would echo entry text."""
    messages = []
    for error in errors:
        if error.get("type") == "json_invalid":
            messages.append("request body is not valid JSON")
        elif error.get("type") == "missing":
            messages.append(f"{_location(error['loc'])}: field required")
        else:
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
            messages.append(f"{_location(error['loc'])}: {message}")
    return "; ".join(messages)


def validate_body(model: type[Body], data: Mapping[str, Any] | BaseModel) -> Body:
    """`data` as a `model`: a mapping validated, an instance of `model` passed through unchanged."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(describe_errors(exc.errors())) from None


def reject_blank_texts(texts: list[str]) -> list[str]:
    """A field validator for `texts`: every text must have content."""
    blank = [str(i) for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ValueError(f"texts at positions {', '.join(blank)} are empty or whitespace only")
    return texts


@dataclass(frozen=True)
class TextLimits:
    """The text limits request schemas are built with. Schemas are made once per limits (cached by
    them), so every transport validates with the same class: an HTTP body FastAPI already parsed is
    an instance of the schema the operation validates with, and passes through unchanged."""

    max_texts: int
    max_text_chars: int

    @classmethod
    def of(cls, settings: GatewaySettings) -> TextLimits:
        return cls(settings.max_texts, settings.max_text_chars)


def texts_field(limits: TextLimits, what: str = "texts") -> Any:
    """The annotated `texts` list with these limits, for request schemas."""
    text = Annotated[str, StringConstraints(strict=True, max_length=limits.max_text_chars)]
    description = f"1 to {limits.max_texts} {what}, each up to {limits.max_text_chars} characters."
    return Annotated[
        list[text],
        Field(min_length=1, max_length=limits.max_texts, description=description),
        AfterValidator(reject_blank_texts),
    ]
