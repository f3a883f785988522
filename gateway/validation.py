"""Request validation shared by both transports: the same pydantic schema, the same messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import invalid_input

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


def validate_body(model: type[Body], data: Mapping[str, Any]) -> Body:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(describe_errors(exc.errors())) from None
