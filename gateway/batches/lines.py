"""One batch line run through the operation layer (`gateway.operations.registry.run_operation`), exactly
as its HTTP route runs it, as its creator: a line's answer is the synchronous answer. The line's context
is `background` (lower priority in admission and Triton) and its request ID is the line's own
(`<batch>-<line>`), so a line run twice after a worker died is one usage-ledger row.

Transient failures (overload, rate limits, an unavailable or slow model) are tried again with
exponential backoff and jitter; permanent ones (the request's own fault: 4xx) answer at once."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gateway.batches.metrics import BatchMetrics
from gateway.batches.parse import AUDIO_FIELD
from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.operations import Operations
from gateway.operations.entries import Upload, uploaded
from gateway.operations.openai_transcription import OpenAIAnswer
from gateway.operations.registry import operation_for, run_operation
from gateway.security.access import Access, Principal

logger = logging.getLogger(__name__)

TRANSIENT = frozenset(
    {ErrorType.OVERLOADED, ErrorType.UNAVAILABLE, ErrorType.RATE_LIMITED, ErrorType.DEADLINE_EXCEEDED}
)
MAX_BACKOFF_S = 30.0
AudioReader = Callable[[str, str], Awaitable[bytes | None]]
"""Reads an audio file by tenant and ID (None: the tenant has no such audio file)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.5

    def delay_s(self, attempt: int) -> float:
        """Before try `attempt + 1`: base * 2^(attempt-1), at most 30 s, with up to 50 % jitter."""
        delay = min(MAX_BACKOFF_S, self.base_s * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class LineOutcome:
    ok: bool
    record: dict[str, Any]
    """The output line (ok) or error line, in OpenAI's batch output format."""


def line_request_id(batch_id: str, line: int) -> str:
    return f"{batch_id}-{line}"


def output_record(batch_id: str, line: int, custom_id: str | None, body: Any) -> dict[str, Any]:
    request_id = line_request_id(batch_id, line)
    response = {"status_code": 200, "request_id": request_id, "body": body}
    return {"id": f"batch_req_{request_id}", "custom_id": custom_id, "response": response, "error": None}


def error_record(
    batch_id: str, line: int, custom_id: str | None, code: str, message: str, status: int | None = None
) -> dict[str, Any]:
    """An error line: with the HTTP answer the synchronous request would have had when it ran."""
    request_id = line_request_id(batch_id, line)
    response = None
    if status is not None:
        error = {"type": code, "message": message}
        response = {"status_code": status, "request_id": request_id, "body": {"error": error}}
    return {
        "id": f"batch_req_{request_id}",
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": message, "line": line},
    }


def answer_body(answer: BaseModel | OpenAIAnswer) -> Any:
    """The body the HTTP route sends for `answer` (JSON, or the text of a text format)."""
    if isinstance(answer, OpenAIAnswer):
        return answer.body if isinstance(answer.body, str) else _dump(answer.body)
    return _dump(answer)


def _dump(model: BaseModel) -> Any:
    body = getattr(model, "body", None)
    return body() if callable(body) else model.model_dump(mode="json")


class LineRunner:
    def __init__(
        self,
        operations: Operations,
        read_audio: AudioReader,
        retry: RetryPolicy,
        access: Access | None,
        metrics: BatchMetrics,
    ) -> None:
        self.metrics = metrics
        self.operations = operations
        self.read_audio = read_audio
        self.retry = retry
        self.access = access

    async def run(
        self, batch_id: str, line: int, principal: Principal, request: Mapping[str, Any]
    ) -> LineOutcome:
        custom_id = request["custom_id"]
        url, body = request["url"], dict(request["body"])
        attempt = 0
        while True:
            attempt += 1
            context = RequestContext(
                request_id=line_request_id(batch_id, line),
                principal=principal,
                access=self.access,
                background=True,
            )
            try:
                upload = await self._upload(principal.tenant, url, body)
                fields = {} if upload is not None else body
                answer = await run_operation(self.operations, context, url, fields, upload)
            except SamoError as error:
                if error.type in TRANSIENT and attempt < self.retry.attempts:
                    self.metrics.retries.labels(error.type.value).inc()
                    await asyncio.sleep(self.retry.delay_s(attempt))
                    continue
                self.metrics.lines.labels(error.type.value).inc()
                return LineOutcome(
                    False,
                    error_record(
                        batch_id, line, custom_id, error.type.value, error.message, error.http_status
                    ),
                )
            except Exception as exc:  # a fault of the gateway's, not the line's: logged without content
                logger.exception("batch %s line %d failed: %s", batch_id, line, type(exc).__name__)
                self.metrics.lines.labels(ErrorType.INTERNAL.value).inc()
                return LineOutcome(
                    False,
                    error_record(batch_id, line, custom_id, "internal", "the line failed to run", 500),
                )
            self.metrics.lines.labels("ok").inc()
            return LineOutcome(True, output_record(batch_id, line, custom_id, answer_body(answer)))

    async def _upload(self, tenant: str, url: str, body: dict[str, Any]) -> Upload | None:
        """The audio file a line names, with the line's other fields as the upload's form."""
        file_id = body.get(AUDIO_FIELD)
        if file_id is None:
            return None
        if operation_for(url).takes == "json":
            raise SamoError(ErrorType.INVALID_INPUT, f"`{url}` takes no `{AUDIO_FIELD}`")
        data = await self.read_audio(tenant, str(file_id))
        if data is None:
            raise SamoError(ErrorType.NOT_FOUND, f"body.{AUDIO_FIELD}: the audio file no longer exists")
        fields = {name: value for name, value in body.items() if name != AUDIO_FIELD}
        return uploaded(data, fields)
