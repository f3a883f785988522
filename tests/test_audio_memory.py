"""Long recordings against a real Triton: the gateway's memory does not follow the duration, and work
stops when the client leaves or the deadline passes.

The recording is 20 minutes of silence with the JFK clip every two minutes (`load_tests.memory_probe`):
decoding, the VAD's chunked passes and their cuts, windows and repairs all run, in little Whisper time.
Before streaming, the gateway held the whole waveform (77 MB for 20 minutes) and ran the VAD over it at
once (about 0.4 MB per second of audio), so its memory grew by over 500 MB for this file.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tritonclient.grpc.aio import InferenceServerClient

from load_tests.memory_probe import SPARSE_EVERY_S, measure_upload, recording
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from tests.conftest import gateway_settings, running_gateway
from tests.speech import JFK_TEXT, word_error_rate

MINUTES = 20
CLIPS = int(MINUTES * 60 // SPARSE_EVERY_S)
MAX_GROWTH_MB = 150  # measured: about 45 MB for this file, and for 59 minutes of silence


@pytest.fixture(scope="module")
def whisper_triton(
    serving_repository: Path, tmp_path_factory: pytest.TempPathFactory, local_triton
) -> Iterator[LocalTriton]:
    """Triton serving only the embedded Whisper tiny.en (CTranslate2, the session's export): quick to
    start, and no other gateway's probes reach it."""
    repository = tmp_path_factory.mktemp("whisper-only")
    (repository / "whisper").symlink_to(serving_repository / "whisper")
    with local_triton(repository) as server:
        yield server


@pytest.fixture(scope="module")
def sparse_recording() -> tuple[str, bytes]:
    return recording("sparse", MINUTES)


def test_a_long_recording_costs_the_gateway_bounded_memory(
    whisper_triton: LocalTriton, sparse_recording: tuple[str, bytes], samo_process
) -> None:
    env = {
        "SAMO_TRITON_GRPC_URL": whisper_triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(whisper_triton.repository),
    }
    name, data = sparse_recording
    with samo_process("gateway", env=env, ready="/health/live") as gateway:
        figures, transcript = measure_upload(
            gateway.http_url, gateway.pid, name, data, kind="sparse", minutes=MINUTES
        )
    assert figures.status == 200, transcript
    assert figures.growth_mb < MAX_GROWTH_MB, figures
    assert transcript["duration"] == pytest.approx(MINUTES * 60, abs=0.01)
    # Every clip is in the transcript, where it was spoken (each ends a two-minute stretch).
    for number in range(1, CLIPS + 1):
        end = number * SPARSE_EVERY_S
        heard = " ".join(s["text"] for s in transcript["segments"] if end - 12 <= s["start"] < end)
        assert word_error_rate(JFK_TEXT, heard) <= 0.2, (number, heard)


async def whisper_inferences(triton: LocalTriton) -> int:
    client = InferenceServerClient(triton.grpc_url)
    try:
        stats = (await client.get_inference_statistics("whisper")).model_stats[0]
    finally:
        await client.close()
    return int(stats.inference_stats.success.count + stats.inference_stats.fail.count)


def settled_inferences(triton: LocalTriton, at_least: int) -> int:
    """Triton's count of whisper requests once the ones in flight have landed: read until it stops
    changing (a request Triton already runs is finished, not aborted)."""
    count = asyncio.run(whisper_inferences(triton))
    for _ in range(40):
        time.sleep(0.25)
        now = asyncio.run(whisper_inferences(triton))
        if now == count and now >= at_least:
            return now
        count = now
    return count


def windows_one_by_one(triton: LocalTriton, **overrides: object) -> GatewaySettings:
    # Windows one after another, so stopping early shows in the count.
    return gateway_settings(triton, max_windows_in_flight=1, **overrides)


def test_past_the_deadline_the_request_gets_504_and_its_windows_stop(
    whisper_triton: LocalTriton, sparse_recording: tuple[str, bytes]
) -> None:
    # A 3 s deadline that no amount of audio extends: the first windows run, the rest never go out.
    settings = windows_one_by_one(whisper_triton, triton_timeout_s=3.0, deadline_s_per_unit=0.0)
    name, data = sparse_recording
    before = asyncio.run(whisper_inferences(whisper_triton))
    with running_gateway(settings) as gateway:
        response = httpx.post(f"{gateway.http_url}/v1/transcribe", files={"file": (name, data)}, timeout=120)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["type"] == "deadline_exceeded"
        sent = settled_inferences(whisper_triton, before) - before
    assert sent < CLIPS, f"{sent} windows went to Triton after the deadline"


def test_a_client_that_disconnects_stops_its_windows(
    whisper_triton: LocalTriton, sparse_recording: tuple[str, bytes]
) -> None:
    settings = windows_one_by_one(whisper_triton)
    name, data = sparse_recording
    body, content_type = multipart_file(name, data)
    before = asyncio.run(whisper_inferences(whisper_triton))
    with running_gateway(settings) as gateway:
        with socket.create_connection(("127.0.0.1", settings.port), timeout=30) as client:
            head = (
                f"POST /v1/transcribe HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            client.sendall(head.encode() + body)
            while asyncio.run(whisper_inferences(whisper_triton)) == before:  # the work has started
                time.sleep(0.05)
        # The client is gone: the route answers 499 (counted, never sent) once the work is cancelled.
        with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
            for _ in range(600):
                if 'route="/v1/transcribe",status="499"' in http.get("/metrics").text:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the transcription was not cancelled")
        sent = settled_inferences(whisper_triton, before) - before
    assert sent < CLIPS, f"{sent} windows went to Triton after the client left"


def multipart_file(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "samo-memory-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"
