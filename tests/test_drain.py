"""One drain rule for every operation: once shutdown begins, every operation on every transport refuses
new work (HTTP 503 with the error body and Retry-After; gRPC UNAVAILABLE), and work already running
finishes.

The drain is begun in the operation layer only (`Operations.begin_drain`, what the SIGTERM hook calls),
with both servers still taking calls: a refusal here can only come from the operation layer. The test
walks the operation registry and the gRPC service's descriptor, so an operation or method added without
a case here fails it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from gateway.errors import GRPC_ERROR_TYPE_KEY, GRPC_RETRY_AFTER_KEY
from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from gateway.operations import Operations
from gateway.operations.entries import SHUTTING_DOWN
from gateway.operations.registry import OPERATIONS
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway, running_gateway
from tests.speech import long_speech, wav_bytes

TEXT = "Work was hard today. But dinner with my sister made me so happy."
EVENTS = {"accept": "text/event-stream"}


@pytest.fixture(scope="module")
def draining_gateway(triton: LocalTriton, make_gateway_settings) -> Iterator[Gateway]:
    settings = make_gateway_settings(triton, default_summarizer="extractive", health_probe_interval_s=3600.0)
    with running_gateway(settings) as gateway:
        yield gateway


def _http_calls(audio: bytes) -> dict[str, list[Callable[[httpx.Client], httpx.Response]]]:
    """Every HTTP form of every operation, by the operation's path."""

    def upload(path: str, headers: dict[str, str] | None = None, **fields: str):
        files = {"file": ("entry.wav", audio, "audio/wav")}
        return lambda c: c.post(path, files=files, data=fields, headers=headers)

    return {
        "/v1/emotions": [lambda c: c.post("/v1/emotions", json={"texts": [TEXT]})],
        "/v1/transcribe": [upload("/v1/transcribe")],
        "/v1/audio/transcriptions": [upload("/v1/audio/transcriptions", model="whisper-1")],
        "/v1/summarize": [
            lambda c: c.post("/v1/summarize", json={"texts": [TEXT]}),
            lambda c: c.post("/v1/summarize", json={"texts": [TEXT]}, headers=EVENTS),
        ],
        "/v1/journal": [
            lambda c: c.post("/v1/journal", json={"text": TEXT}),
            lambda c: c.post("/v1/journal", json={"text": TEXT}, headers=EVENTS),
            upload("/v1/journal"),
            upload("/v1/journal", headers=EVENTS),
        ],
    }


def _grpc_calls(audio: bytes) -> dict[str, list[Callable[[samo_v1_pb2_grpc.SamoStub], object]]]:
    """Every gRPC method of `samo.v1.Samo`, with each kind of entry it takes."""
    text_entry = pb.AnalyzeJournalRequest(text=TEXT)
    audio_entry = pb.AnalyzeJournalRequest(audio=audio)
    return {
        "DetectEmotions": [lambda s: s.DetectEmotions(pb.DetectEmotionsRequest(texts=[TEXT]))],
        "Transcribe": [lambda s: s.Transcribe(pb.TranscribeRequest(audio=audio))],
        "TranscribeStream": [lambda s: list(s.TranscribeStream(iter([pb.AudioChunk(data=audio)])))],
        "Summarize": [lambda s: s.Summarize(pb.SummarizeRequest(texts=[TEXT]))],
        "AnalyzeJournal": [lambda s: s.AnalyzeJournal(text_entry), lambda s: s.AnalyzeJournal(audio_entry)],
        "StreamJournal": [
            lambda s: list(s.StreamJournal(text_entry)),
            lambda s: list(s.StreamJournal(audio_entry)),
        ],
        "TranscribeLive": [
            lambda s: list(s.TranscribeLive(iter([pb.LiveClientEvent(audio=b"\0\0" * 1600)])))
        ],
    }


WEBSOCKET_PATHS = ("/v1/realtime",)
"""Operations whose HTTP form is a WebSocket: refused with an `error` event, then close code 1012."""


async def _refused_session(http_url: str, path: str) -> tuple[dict, int | None]:
    async with connect(http_url.replace("http://", "ws://") + path) as websocket:
        event = json.loads(await websocket.recv())
        await websocket.wait_closed()
        return event, websocket.close_code


def test_the_cases_cover_every_operation_and_method() -> None:
    http, rpc = _http_calls(b""), _grpc_calls(b"")
    assert set(http) | set(WEBSOCKET_PATHS) == {operation.path for operation in OPERATIONS}
    methods = set(pb.DESCRIPTOR.services_by_name["Samo"].methods_by_name)
    assert set(rpc) == methods
    assert {m for operation in OPERATIONS for m in operation.grpc_methods} == methods


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


@pytest.mark.integration
def test_draining_refuses_new_work_on_every_operation_and_finishes_running_work(
    draining_gateway: Gateway,
) -> None:
    assert draining_gateway.app is not None
    operations: Operations = draining_gateway.app.state.operations
    long_audio = wav_bytes(long_speech(repeats=3))  # 36 s: two windows, seconds of work
    short_audio = wav_bytes(long_speech(repeats=1))
    http = httpx.Client(base_url=draining_gateway.http_url, timeout=120)
    channel = grpc.insecure_channel(draining_gateway.grpc_target)
    stub = samo_v1_pb2_grpc.SamoStub(channel)
    with http, channel, ThreadPoolExecutor(2) as pool:
        # Work running when the drain begins: one transcription per transport.
        started = threading.Barrier(3)

        def over_http() -> httpx.Response:
            started.wait()
            return http.post("/v1/transcribe", files={"file": ("a.wav", long_audio, "audio/wav")})

        def over_grpc() -> pb.TranscribeResponse:
            started.wait()
            return stub.Transcribe(pb.TranscribeRequest(audio=long_audio))

        running: list[Future] = [pool.submit(over_http), pool.submit(over_grpc)]
        started.wait()
        two_uploads = 2 * operations.costs.upload()
        _wait_until(lambda: operations.admission.in_use >= two_uploads, "both transcriptions run")
        operations.begin_drain()

        refused = 0
        for path, calls in _http_calls(short_audio).items():
            for call in calls:
                response = call(http)
                assert response.status_code == 503, (path, response.status_code, response.text[:200])
                assert response.json()["error"]["type"] == "upstream_unavailable", path
                assert response.json()["error"]["message"] == SHUTTING_DOWN, path
                assert int(response.headers["retry-after"]) > 0, path
                refused += 1
        for path in WEBSOCKET_PATHS:
            event, code = asyncio.run(_refused_session(draining_gateway.http_url, path))
            assert event["type"] == "error" and event["error"]["code"] == "upstream_unavailable", path
            assert event["error"]["message"] == SHUTTING_DOWN and code == 1012, path
            refused += 1
        for method, calls in _grpc_calls(short_audio).items():
            for call in calls:
                with pytest.raises(grpc.RpcError) as error:
                    call(stub)
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE, method
                assert error.value.details() == SHUTTING_DOWN, method
                trailing = dict(error.value.trailing_metadata() or ())
                assert trailing[GRPC_ERROR_TYPE_KEY] == "upstream_unavailable", method
                assert int(trailing[GRPC_RETRY_AFTER_KEY]) > 0, method
                refused += 1
        assert refused == 19

        ready = http.get("/health/ready")
        assert ready.status_code == 503 and "shutting down" in ready.json()["reason"]

        # What was running when the drain began finishes with its own answer.
        via_http, via_grpc = (future.result(timeout=120) for future in running)
        assert via_http.status_code == 200, via_http.text[:200]
        assert via_http.json()["text"].count("country") >= 4
        assert via_grpc.text.count("country") >= 4
    assert operations.admission.in_use == 0
