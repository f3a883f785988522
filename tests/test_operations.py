"""The operation registry: an operation run from a plain body (as a batch line will run it) answers what
its HTTP route answers, through the same validation, admission and services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.operations import Operations, uploaded
from gateway.operations.registry import BY_NAME, operation_for, run_operation
from gateway.services import Services
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from tests.speech import JFK_WAV

ENTRY = "Work was hard today. But dinner with my sister made me so happy. I slept well."


def _with_operations(
    triton: LocalTriton, repository: Path, work: Callable[[Operations], Awaitable[Any]]
) -> Any:
    """`work` over a gateway's operations of its own (grpc.aio channels belong to an event loop)."""

    async def run() -> Any:
        settings = GatewaySettings(
            triton_grpc_url=triton.grpc_url, model_repository=repository, default_summarizer="extractive"
        )
        services = Services.open(settings)
        try:
            return await work(Operations(services))
        finally:
            await services.close()

    return asyncio.run(run())


def assert_same_answer(ours: Any, theirs: Any, where: str) -> None:
    """Equal, numbers within 1e-3: int8 kernels give scores and log-probabilities that depend on the
    batch a request shared (a health probe may join one), by far less than any mix-up would."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=1e-3), where
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same_answer(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_answer(mine, other, f"{where}[{index}]")
    else:
        assert ours == theirs, where


def test_operations_are_found_by_name_and_url() -> None:
    assert operation_for("/v1/journal") is BY_NAME["journal"]
    assert BY_NAME["transcribe"].grpc_methods == ("Transcribe", "TranscribeStream")
    with pytest.raises(SamoError) as error:
        operation_for("/v1/nothing")
    assert error.value.type is ErrorType.NOT_FOUND
    assert "/v1/emotions" in error.value.message


@pytest.mark.integration
def test_an_operation_run_from_a_plain_body_answers_as_its_http_route(
    triton: LocalTriton, serving_repository: Path, http: httpx.Client
) -> None:
    audio = JFK_WAV.read_bytes()
    bodies = {
        "/v1/emotions": {"texts": [ENTRY, "I feel lonely tonight."], "top_k": 3},
        "/v1/summarize": {"texts": [ENTRY]},
        "/v1/journal": {"text": ENTRY, "threshold": 0.2},
    }

    async def work(operations: Operations) -> dict[str, Any]:
        answers = {}
        for path, body in bodies.items():
            answers[path] = await run_operation(operations, RequestContext(), path, body)
        answers["/v1/transcribe"] = await run_operation(
            operations, RequestContext(), "/v1/transcribe", {}, uploaded(audio, {"beam_size": 2})
        )
        for path, body, upload, expected in (
            ("/v1/transcribe", {}, None, ErrorType.INVALID_INPUT),  # audio operation without audio
            ("/v1/emotions", bodies["/v1/emotions"], uploaded(audio), ErrorType.INVALID_INPUT),
            ("/v1/emotions", {"texts": []}, None, ErrorType.INVALID_INPUT),
        ):
            with pytest.raises(SamoError) as error:
                await run_operation(operations, RequestContext(), path, body, upload)
            assert error.value.type is expected, path
        assert operations.admission.in_use == 0  # every run gave its units back
        return answers

    answers = _with_operations(triton, serving_repository, work)
    for path, body in bodies.items():
        response = http.post(path, json=body)
        assert response.status_code == 200, (path, response.text[:200])
        assert_same_answer(answers[path].body(), response.json(), path)
    over_http = http.post("/v1/transcribe", files={"file": ("jfk.wav", audio)}, data={"beam_size": "2"})
    assert over_http.status_code == 200
    assert_same_answer(answers["/v1/transcribe"].body(), over_http.json(), "/v1/transcribe")
