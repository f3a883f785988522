"""Request body limits and upload admission, over real HTTP (uvicorn) against the real app.

Raw sockets send exactly what a misbehaving client would (a huge Content-Length with no body, a chunked
body that never ends), so the tests see what the server does before the body arrives. None of this
reaches Triton: the gateway points at a port where nothing listens.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.processes import free_port
from tests.conftest import Gateway, running_gateway

MAX_BODY = 1 << 20
MAX_AUDIO = 2 << 20
BOUNDARY = "samo-test-boundary"


@pytest.fixture(scope="module")
def limited_gateway(
    serving_repository: Path, tmp_path_factory: pytest.TempPathFactory, make_gateway_settings
) -> Iterator[Gateway]:
    repository = tmp_path_factory.mktemp("whisper-only")  # the session's Whisper tiny.en export alone
    (repository / "whisper").symlink_to(serving_repository / "whisper")
    settings = make_gateway_settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}",  # nothing listens: no request here reaches Triton
        model_repository=repository,
        max_body_bytes=MAX_BODY,
        max_audio_bytes=MAX_AUDIO,
        # One transcription's admission (a 30 s window at 16 units per second) takes the whole budget.
        admission_budget=480,
    )
    with running_gateway(settings) as gateway:
        yield gateway


def connect(gateway: Gateway) -> socket.socket:
    host, port = gateway.http_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the response on `sock` (the server closes or sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length])


def request_head(path: str, content_type: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode()


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, file name or None, content) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def wait_for_requests_in_progress(gateway: Gateway, count: int) -> None:
    """Until the gateway counts `count` HTTP requests in progress (its first await after admission is
    the body, so a request counted in progress here has been admitted)."""
    with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        for _ in range(200):
            for line in http.get("/metrics").text.splitlines():
                if (
                    line.startswith('samo_inflight_requests{transport="http"}')
                    and float(line.split()[-1]) >= count
                ):
                    return
    raise AssertionError(f"the gateway never had {count} requests in progress")


def test_declared_length_over_the_limit_is_refused_before_the_body_is_sent(limited_gateway: Gateway) -> None:
    with connect(limited_gateway) as sock:
        sock.sendall(request_head("/v1/emotions", "application/json", 300_000_000))  # and no body at all
        status, body = read_response(sock)
    assert status == 413
    assert body["error"]["type"] == "too_large"
    assert body["error"]["message"] == "request body is 286.1 MB; the limit is 1.0 MB"


def test_chunked_body_is_cut_off_once_it_passes_the_limit(limited_gateway: Gateway) -> None:
    chunk = b"[" + b" " * 65534 + b"]"
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with connect(limited_gateway) as sock:
        sock.sendall(request_head("/v1/emotions", "application/json", None))
        while sent < 64 * MAX_BODY:  # a body that would never end
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body = read_response(sock)
    assert status == 413
    assert body["error"]["message"] == "request body is larger; the limit is 1.0 MB"
    # The server stopped reading near the limit (what was sent past it sat in socket buffers).
    assert sent < 32 * MAX_BODY


def test_uploads_get_the_audio_limit_and_keep_the_error_body(limited_gateway: Gateway) -> None:
    with httpx.Client(base_url=limited_gateway.http_url, timeout=30) as http:
        # Over the JSON limit but within the audio limit: read, then refused as not audio.
        fits = http.post("/v1/transcribe", files={"file": ("a.wav", b"\x01" * (MAX_BODY + 4096))})
        assert fits.status_code == 415, fits.text
        over = http.post("/v1/transcribe", files={"file": ("a.wav", b"\x01" * (MAX_AUDIO + 200_000))})
        assert over.status_code == 413
        assert over.json()["error"]["message"] == "audio file is 2.2 MB; the limit is 2.0 MB"
        journal = http.post("/v1/journal", files={"file": ("a.wav", b"\x01" * (MAX_AUDIO + 200_000))})
        assert journal.status_code == 413
        journal_text = http.post("/v1/journal", json={"text": "a" * (MAX_BODY + 10)})
        assert journal_text.status_code == 413
        assert journal_text.json()["error"]["message"].startswith(
            "request body is 1.0 MB; the limit is 1.0 MB"
        )


def test_chunked_upload_is_cut_off_at_the_audio_limit(limited_gateway: Gateway) -> None:
    head, boundary = multipart([("file", "a.wav", b"")])
    head = head[: head.index(b"\r\n--")]  # the file part's headers; its content follows, chunk by chunk
    with connect(limited_gateway) as sock:
        sock.sendall(request_head("/v1/audio/transcriptions", boundary, None))
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        for _ in range(64):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(f"{65536:x}\r\n".encode() + b"\x01" * 65536 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        status, body = read_response(sock)
    assert status == 413
    assert body["error"]["message"] == "audio file is larger; the limit is 2.0 MB"


@pytest.mark.parametrize("path", ["/v1/transcribe", "/v1/audio/transcriptions", "/v1/journal"])
def test_upload_forms_are_capped_part_by_part(limited_gateway: Gateway, path: str) -> None:
    audio = ("file", "a.wav", b"RIFF")
    cases = {
        "Too many files. Maximum number of files is 1.": [audio, ("file", "b.wav", b"RIFF")],
        "Too many fields. Maximum number of fields is 16.": [audio]
        + [(f"x{i}", None, b"1") for i in range(17)],
        "Part exceeded maximum size of 16KB.": [audio, ("language", None, b"e" * 20_000)],
    }
    with httpx.Client(base_url=limited_gateway.http_url, timeout=30) as http:
        for message, parts in cases.items():
            body, content_type = multipart(parts)
            response = http.post(path, content=body, headers={"content-type": content_type})
            assert response.status_code == 422, response.text
            assert response.json()["error"] == {
                "type": "invalid_input",
                "message": f"multipart form: {message}",
                **{k: v for k, v in response.json()["error"].items() if k not in ("type", "message")},
            }
        assert http.get("/health/live").status_code == 200


def test_admission_is_decided_before_the_upload_is_read(limited_gateway: Gateway) -> None:
    body, content_type = multipart([("file", "a.wav", b"\x01" * 1000)])
    with connect(limited_gateway) as first, connect(limited_gateway) as second:
        # The first upload is admitted and then waits for its body, holding the whole budget.
        first.sendall(request_head("/v1/transcribe", content_type, len(body)) + body[:100])
        wait_for_requests_in_progress(limited_gateway, 2)  # the first one, and the /metrics request
        # The second declares a large upload and sends none of it: refused on its headers alone.
        second.sendall(request_head("/v1/transcribe", content_type, MAX_AUDIO))
        status, refused = read_response(second)
        assert status == 429
        assert refused["error"]["type"] == "overloaded"
        first.sendall(body[100:])
        status, answered = read_response(first)
        assert status == 415, answered  # random bytes: read in full, then refused as not audio
