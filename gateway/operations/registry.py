"""The operations by name and by URL: what each takes, which gRPC methods carry it, and how to run one
from a plain body (a batch line names an operation by its URL and carries its JSON body)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from gateway.context import RequestContext
from gateway.errors import invalid_input, not_found
from gateway.operations.entries import Operations, Upload
from gateway.operations.openai_transcription import OpenAIAnswer
from gateway.security.scopes import Scope

Answer = BaseModel | OpenAIAnswer


@dataclass(frozen=True)
class Operation:
    name: str
    path: str
    """The HTTP route (POST; a WebSocket for live transcription), also how a batch line names it."""
    grpc_methods: tuple[str, ...]
    """The `samo.v1.Samo` methods that carry it (streaming forms included)."""
    takes: Literal["json", "audio", "json or audio", "live audio"]
    streams: bool
    """Also answers as a stream (Server-Sent Events on HTTP, a server stream on gRPC)."""
    scope: Scope
    """The scope a caller needs (the entry's own gate checks it; listed here for batch lines and docs)."""
    run: Callable[[Operations, RequestContext, Mapping[str, Any], Upload | None], Awaitable[Answer]]


def _json_only(
    entry: Callable[[Operations, RequestContext, Mapping[str, Any]], Awaitable[Answer]],
) -> Callable[[Operations, RequestContext, Mapping[str, Any], Upload | None], Awaitable[Answer]]:
    async def run(
        ops: Operations, context: RequestContext, body: Mapping[str, Any], upload: Upload | None
    ) -> Answer:
        if upload is not None:
            raise invalid_input("this operation takes no audio")
        return await entry(ops, context, body)

    return run


def _audio_only(
    entry: Callable[[Operations, RequestContext, Upload], Awaitable[Answer]],
) -> Callable[[Operations, RequestContext, Mapping[str, Any], Upload | None], Awaitable[Answer]]:
    async def run(
        ops: Operations, context: RequestContext, body: Mapping[str, Any], upload: Upload | None
    ) -> Answer:
        if upload is None:
            raise invalid_input("this operation takes an audio file")
        return await entry(ops, context, upload)

    return run


async def _journal(
    ops: Operations, context: RequestContext, body: Mapping[str, Any], upload: Upload | None
) -> Answer:
    return await ops.journal(context, upload if upload is not None else body)


async def _live(
    ops: Operations, context: RequestContext, body: Mapping[str, Any], upload: Upload | None
) -> Answer:
    raise invalid_input("live transcription is a session: `WS /v1/realtime` or gRPC `TranscribeLive`")


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "emotions",
        "/v1/emotions",
        ("DetectEmotions",),
        "json",
        False,
        Scope.EMOTIONS,
        _json_only(Operations.emotions),
    ),
    Operation(
        "transcribe",
        "/v1/transcribe",
        ("Transcribe", "TranscribeStream"),
        "audio",
        True,
        Scope.TRANSCRIPTION,
        _audio_only(Operations.transcribe),
    ),
    Operation(
        "openai_transcription",
        "/v1/audio/transcriptions",
        (),
        "audio",
        False,
        Scope.TRANSCRIPTION,
        _audio_only(Operations.openai_transcription),
    ),
    Operation(
        "summarize",
        "/v1/summarize",
        ("Summarize",),
        "json",
        True,
        Scope.SUMMARIES,
        _json_only(Operations.summarize),
    ),
    Operation(
        "journal",
        "/v1/journal",
        ("AnalyzeJournal", "StreamJournal"),
        "json or audio",
        True,
        Scope.JOURNAL,
        _journal,
    ),
    Operation(
        "live_transcription",
        "/v1/realtime",
        ("TranscribeLive",),
        "live audio",
        True,
        Scope.LIVE,
        _live,
    ),
)
BY_NAME: Mapping[str, Operation] = {op.name: op for op in OPERATIONS}
BY_PATH: Mapping[str, Operation] = {op.path: op for op in OPERATIONS}


def operation_for(path: str) -> Operation:
    """The operation at `path` (`/v1/emotions`), or NOT_FOUND naming the ones there are."""
    operation = BY_PATH.get(path)
    if operation is None:
        raise not_found(f"no operation at `{path}`; operations: {', '.join(BY_PATH)}")
    return operation


async def run_operation(
    ops: Operations,
    context: RequestContext,
    path: str,
    body: Mapping[str, Any],
    upload: Upload | None = None,
) -> Answer:
    """Run the operation at `path` with a plain body (and audio, for the audio operations), exactly as
    its HTTP route runs it: same validation, admission, deadline and answer."""
    return await operation_for(path).run(ops, context, body, upload)
