"""A batch input file read into lines: each line valid (custom ID, the batch's endpoint, a JSON body)
or malformed with its line number and why. A file that cannot make a batch at all (not UTF-8 JSONL, no
lines, too many lines, repeated custom IDs, no valid line) is refused whole, with a message that says
what is wrong and where, and never what a line holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.batches.models import InputLine
from gateway.errors import invalid_input
from gateway.validation import describe_errors

AUDIO_FIELD = "file_id"
"""The field of an audio line's body naming an uploaded audio file (`purpose=audio`)."""


@dataclass(frozen=True)
class ValidLine:
    number: int
    request: InputLine


@dataclass(frozen=True)
class MalformedLine:
    number: int
    custom_id: str | None
    code: str
    message: str


Line = ValidLine | MalformedLine


@dataclass(frozen=True)
class Limits:
    max_lines: int
    max_line_bytes: int


def parse_input(
    data: bytes, endpoint: str, limits: Limits, audio_exists: Callable[[str], bool] | None
) -> list[Line]:
    """Every non-blank line of `data` in order; `audio_exists` checks an audio line's `file_id` (None:
    the endpoint takes no audio)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_input(
            f"input file: not UTF-8 (byte {exc.start}); send JSONL, one request per line"
        ) from None
    lines: list[Line] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if len(lines) >= limits.max_lines:
            raise invalid_input(f"input file: more than {limits.max_lines} lines (SAMO_BATCH_MAX_LINES)")
        line = _line(number, raw, endpoint, limits, audio_exists)
        if isinstance(line, ValidLine):
            custom_id = line.request.custom_id
            if custom_id in seen:
                raise invalid_input(
                    f"input file: line {number} repeats the `custom_id` of line {seen[custom_id]}; "
                    "each line needs its own"
                )
            seen[custom_id] = number
        lines.append(line)
    if not lines:
        raise invalid_input("input file: no lines; send JSONL, one request per line")
    if not seen:
        first = next(line for line in lines if isinstance(line, MalformedLine))
        raise invalid_input(f"input file: no valid line; {first.message}")
    return lines


def _line(
    number: int, raw: str, endpoint: str, limits: Limits, audio_exists: Callable[[str], bool] | None
) -> Line:
    if len(raw.encode()) > limits.max_line_bytes:
        return MalformedLine(
            number, None, "line_too_large", f"line {number}: over {limits.max_line_bytes} bytes"
        )
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        return MalformedLine(number, None, "invalid_json_line", f"line {number}: not valid JSON")
    if not isinstance(payload, dict):
        return MalformedLine(
            number,
            None,
            "invalid_request",
            f"line {number}: not a JSON object (custom_id, method, url, body)",
        )
    custom_id = payload.get("custom_id")
    custom_id = custom_id if isinstance(custom_id, str) and len(custom_id) <= 512 else None
    try:
        request = InputLine.model_validate(payload)
    except ValidationError as exc:
        return MalformedLine(
            number, custom_id, "invalid_request", f"line {number}: {describe_errors(exc.errors())}"
        )
    if request.url != endpoint:
        return MalformedLine(
            number,
            custom_id,
            "mismatched_url",
            f"line {number}: url `{request.url}` is not the batch's endpoint `{endpoint}`",
        )
    file_id = request.body.get(AUDIO_FIELD)
    if file_id is not None:
        if audio_exists is None:
            return MalformedLine(
                number, custom_id, "invalid_request", f"line {number}: `{endpoint}` takes no `file_id`"
            )
        if not isinstance(file_id, str) or not audio_exists(file_id):
            return MalformedLine(
                number,
                custom_id,
                "invalid_request",
                f"line {number}: body.file_id: no audio file with that ID (upload it with purpose=audio)",
            )
    return ValidLine(number, request)
