"""Knowing what happened: request IDs (HTTP, gRPC, logs, Triton), JSON logs, OpenTelemetry spans at a
real OTLP receiver, per-model metrics, and /metrics adding up every worker process."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import InferenceServerClient

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.observability.logging import RequestIdFilter
from load_tests.processes import free_port
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway, gateway_settings, running_gateway
from tests.speech import wav_bytes

# Sent as entry text in requests: must never appear in logs, spans or metrics.
SENTINEL = "Quokka-sentinel-5521 wrote about a secret"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
DETECT = "/samo.v1.Samo/DetectEmotions"


def samples(metrics_text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def scrape(http: httpx.Client) -> dict:
    return samples(http.get("/metrics").text)


def detect(http: httpx.Client, texts: list[str], **headers: str) -> httpx.Response:
    return http.post("/v1/emotions", json={"texts": texts}, headers=headers)


# HTTP ---------------------------------------------------------------------------------------------


def test_a_request_id_is_made_and_returned(http: httpx.Client) -> None:
    first, second = detect(http, ["A calm morning."]), detect(http, ["A calm morning."])
    assert first.status_code == second.status_code == 200
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_ID.fullmatch(request_id) for request_id in ids)
    assert ids[0] != ids[1]


def test_the_clients_request_id_is_kept(http: httpx.Client) -> None:
    offered = "client-7f3a_b.c:9"
    response = detect(http, ["A calm morning."], **{"X-Request-ID": offered})
    assert response.headers["x-request-id"] == offered


@pytest.mark.parametrize(
    "offered",
    ["has space", "x" * 65, "<script>", "tab\there", "semi;colon", "ünïcode"],
)
def test_an_unsafe_request_id_is_replaced(http: httpx.Client, offered: str) -> None:
    response = http.post(
        "/v1/emotions", json={"texts": ["A calm morning."]}, headers=[(b"X-Request-ID", offered.encode())]
    )
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


def test_error_bodies_carry_the_request_id(http: httpx.Client) -> None:
    response = detect(http, [], **{"X-Request-ID": "bad-request-1"})
    assert response.status_code == 422
    assert response.headers["x-request-id"] == "bad-request-1"
    assert response.json()["error"]["request_id"] == "bad-request-1"
    unknown = http.post("/v1/emotions", json={"texts": ["fine"], "model": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["request_id"] == unknown.headers["x-request-id"]


# gRPC ---------------------------------------------------------------------------------------------


def _request_id(metadata) -> str | None:
    return dict(metadata or ()).get("x-request-id")


def test_grpc_request_ids(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        request = samo_v1_pb2.DetectEmotionsRequest(texts=["A calm morning."])
        _, made = stub.DetectEmotions.with_call(request, timeout=30)
        _, kept = stub.DetectEmotions.with_call(request, metadata=(("x-request-id", "rpc-42"),), timeout=30)
        _, replaced = stub.DetectEmotions.with_call(
            request, metadata=(("x-request-id", "no spaces please"),), timeout=30
        )
        with pytest.raises(grpc.RpcError) as failed:
            stub.DetectEmotions(
                samo_v1_pb2.DetectEmotionsRequest(texts=[]),
                metadata=(("x-request-id", "rpc-43"),),
                timeout=30,
            )
        streamed = stub.StreamJournal(
            samo_v1_pb2.AnalyzeJournalRequest(text="A calm morning. Then rain."),
            metadata=(("x-request-id", "rpc-44"),),
            timeout=60,
        )
        events = list(streamed)
    assert GENERATED_ID.fullmatch(_request_id(made.initial_metadata()))
    assert _request_id(kept.initial_metadata()) == "rpc-42"
    assert GENERATED_ID.fullmatch(_request_id(replaced.initial_metadata()))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _request_id(failed.value.initial_metadata()) == "rpc-43"
    assert events and _request_id(streamed.initial_metadata()) == "rpc-44"


# Logs ---------------------------------------------------------------------------------------------


def test_log_lines_of_a_request_carry_its_id(http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    caplog.handler.addFilter(RequestIdFilter())
    detect(http, [SENTINEL], **{"X-Request-ID": "logged-1"})
    http.post(
        "/v1/emotions", json={"texts": [SENTINEL], "model": "nope"}, headers={"X-Request-ID": "logged-2"}
    )

    def lines_of(request_id: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if getattr(r, "request_id", None) == request_id]

    # The access line is written once the response has gone out, by the gateway's thread: on a busy
    # machine the client can read the answer first.
    deadline = time.monotonic() + 10
    expected = {"logged-1": "/v1/emotions -> 200", "logged-2": "/v1/emotions -> 404"}

    def logged() -> bool:
        return all(any(line in seen for seen in lines_of(r)) for r, line in expected.items())

    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged(), caplog.text
    assert SENTINEL not in caplog.text
    assert all(SENTINEL not in str(vars(record)) for record in caplog.records)


# Triton -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders_repository(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny encoders alone: a Triton on them starts in seconds."""
    repository = tmp_path_factory.mktemp("two-encoders")
    for name in ("tiny_bert", "tiny_distilbert"):
        shutil.copytree(serving_repository / name, repository / name)
    return repository


@contextmanager
def small_triton(
    local_triton, repository: Path, log_verbose: int = 0
) -> Iterator[tuple[LocalTriton, list[str]]]:
    """A Triton of its own on `repository` (from the `local_triton` factory), and the lines it logs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    server_log = logging.getLogger("samo.triton.server")
    handler, level = Collect(), server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    try:
        with local_triton(repository, log_verbose=log_verbose) as triton:
            yield triton, lines
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)


def _logged(lines: list[str], pattern: str, timeout_s: float = 20) -> list[str]:
    """Triton's lines containing `pattern` (its log reaches us through a pipe and a thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [line for line in list(lines) if pattern in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_triton_gets_the_request_id_and_errors_count_by_model(
    encoders_repository: Path, local_triton
) -> None:
    repository = encoders_repository
    with small_triton(local_triton, repository, log_verbose=1) as (triton, lines):
        _check_triton_request_ids(triton, repository, lines)


def _check_triton_request_ids(triton: LocalTriton, repository: Path, lines: list[str]) -> None:
    settings = gateway_settings(triton, model_repository=repository, default_emotion_model="tiny_bert")
    request_id = f"to-triton-{uuid.uuid4().hex[:12]}"
    with running_gateway(settings) as gateway, httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        assert detect(http, [SENTINEL], **{"X-Request-ID": request_id}).status_code == 200
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            samo_v1_pb2_grpc.SamoStub(channel).DetectEmotions(
                samo_v1_pb2.DetectEmotionsRequest(texts=["Rain again."]),
                metadata=(("x-request-id", f"{request_id}-rpc"),),
                timeout=30,
            )
        # A model Triton no longer serves: the call fails, counted under the model and the error.
        before = scrape(http)
        with InferenceServerClient(triton.grpc_url) as control:
            control.unload_model("tiny_distilbert")
        failed = http.post("/v1/emotions", json={"texts": ["Rain again."], "model": "tiny_distilbert"})
        after = scrape(http)
    assert failed.status_code >= 400
    prepared = _logged(lines, f"request id: {request_id}, model: tiny_bert")
    assert prepared, "Triton's log should name the gateway's request ID"
    assert _logged(lines, f"request id: {request_id}-rpc, model: tiny_bert")
    assert not any(SENTINEL in line for line in lines)
    error_type = failed.json()["error"]["type"]
    errors = value(after, "samo_triton_errors_total", model="tiny_distilbert", error=error_type)
    # The request's call counts once; the health monitor's probes of the model (woken by the failure, or
    # its round) are Triton calls too and may add theirs before the scrape on a busy machine.
    assert errors >= value(before, "samo_triton_errors_total", model="tiny_distilbert", error=error_type) + 1


# Metrics ------------------------------------------------------------------------------------------


def test_metrics_per_model_inflight_work_and_grpc(http: httpx.Client, gateway: Gateway) -> None:
    texts = ["A calm morning.", "Then it rained all day and I felt low.", SENTINEL]
    before = scrape(http)
    response = detect(http, texts)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=texts[:1]), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=[]), timeout=30)
    summary = http.post(
        "/v1/summarize", json={"texts": ["Work was long. I walked home in the rain."], "model": "tiny_t5"}
    )
    audio = http.post(
        "/v1/transcribe",
        files={"file": ("quiet.wav", wav_bytes(np.zeros(24_000, dtype=np.int16)), "audio/wav")},
    )
    page = http.get("/metrics").text
    after = samples(page)
    assert SENTINEL not in page

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    tokens = sum(result["tokens"] for result in response.json()["results"])
    assert grew("samo_texts_total", model="emotion") >= len(texts) + 1
    assert grew("samo_input_tokens_total", model="emotion") >= tokens
    assert grew("samo_triton_request_seconds_count", model="emotion") >= 2
    assert grew("samo_grpc_requests_total", method=DETECT, code="OK") == 1
    assert grew("samo_grpc_requests_total", method=DETECT, code="INVALID_ARGUMENT") == 1
    assert grew("samo_grpc_request_seconds_count", method=DETECT) == 2
    # The scrape itself is in flight while it is counted.
    assert value(after, "samo_inflight_requests", transport="http") >= 1
    assert summary.status_code == 200, summary.text
    generated = summary.json()["results"][0]["tokens"]
    assert generated > 0
    # Readiness probes generate too (one token each), in the background.
    assert grew("samo_generated_tokens_total", model="tiny_t5") >= generated
    assert audio.status_code == 200, audio.text
    assert grew("samo_audio_seconds_total", model="whisper") == pytest.approx(audio.json()["duration"])
    # 1.5 s of silence: one window, nothing to repair.
    assert grew("samo_whisper_windows_total", model="whisper", kind="window") == 1
    assert grew("samo_whisper_windows_total", model="whisper", kind="repair") == 0


# Tracing ------------------------------------------------------------------------------------------


class _OtlpReceiver(BaseHTTPRequestHandler):
    """A real OTLP/HTTP trace receiver: decodes each ExportTraceServiceRequest it is sent."""

    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Receiver", (_OtlpReceiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _attributes(span) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def test_spans_reach_an_otlp_receiver(triton: LocalTriton, otlp_receiver, make_gateway_settings) -> None:
    endpoint, received = otlp_receiver
    settings = make_gateway_settings(triton, default_summarizer="extractive", otlp_endpoint=endpoint)
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    with running_gateway(settings) as gateway, httpx.Client(base_url=gateway.http_url, timeout=60) as http:
        emotions = detect(http, [SENTINEL], traceparent=traceparent, **{"X-Request-ID": "traced-1"})
        audio = http.post(
            "/v1/transcribe",
            files={"file": ("quiet.wav", wav_bytes(np.zeros(16_000, dtype=np.int16)), "audio/wav")},
            headers={"X-Request-ID": "traced-2"},
        )
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            samo_v1_pb2_grpc.SamoStub(channel).DetectEmotions(
                samo_v1_pb2.DetectEmotionsRequest(texts=[SENTINEL]),
                metadata=(("x-request-id", "traced-3"),),
                timeout=30,
            )
    # The gateway has stopped: its provider flushed every span.
    assert emotions.status_code == audio.status_code == 200
    assert received, "no spans reached the receiver"
    assert not any(SENTINEL.encode() in body for body in received)
    spans = []
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {kv.key: kv.value.string_value for kv in resource.resource.attributes}
            assert service["service.name"] == "samo-gateway"
            spans += [span for scope in resource.scope_spans for span in scope.spans]

    def of_request(request_id: str) -> dict:
        """The request's server span, and every span of its trace."""
        server = next(
            s
            for s in spans
            if s.kind == s.SPAN_KIND_SERVER and _attributes(s).get("samo.request_id") == request_id
        )
        return {"server": server, "trace": [s for s in spans if s.trace_id == server.trace_id]}

    http_request = of_request("traced-1")
    assert http_request["server"].name == "POST /v1/emotions"
    assert http_request["server"].trace_id.hex() == trace_id, "the client's traceparent is continued"
    names = {s.name for s in http_request["trace"]}
    assert {"emotions.tokenize", "triton.infer", "emotions.postprocess"} <= names
    by_id = {s.span_id: s for s in http_request["trace"]}
    call = next(s for s in http_request["trace"] if s.name == "triton.infer")
    assert _attributes(call)["samo.model"] == "emotion"
    assert by_id[call.parent_span_id].span_id == http_request["server"].span_id

    transcription = of_request("traced-2")
    assert {"audio.decode", "audio.vad"} <= {s.name for s in transcription["trace"]}

    rpc = of_request("traced-3")
    assert rpc["server"].name == DETECT
    assert "triton.infer" in {s.name for s in rpc["trace"]}


# JSON logs and worker processes -------------------------------------------------------------------


def test_json_logs_and_metrics_across_two_workers(
    encoders_repository: Path, tmp_path: Path, local_triton, samo_process
) -> None:
    with small_triton(local_triton, encoders_repository) as (triton, _):
        _check_workers(samo_process, triton.grpc_url, encoders_repository, tmp_path)


def _rpc_processes(log_path: Path) -> set[object]:
    """The processes that logged a call of `_check_workers` so far (a line still being written is skipped)."""
    processes = set()
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if str(record.get("request_id", "")).startswith("worker-rpc-"):
                processes.add(record["process"])
    return processes


def _check_workers(samo_process, triton_url: str, repository: Path, tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "SAMO_WORKERS": "2",
        "SAMO_TRITON_GRPC_URL": triton_url,
        "SAMO_MODEL_REPOSITORY": str(repository),
        "SAMO_DEFAULT_EMOTION_MODEL": "tiny_bert",
        "SAMO_LOG_FORMAT": "json",
        "SAMO_LOG_LEVEL": "DEBUG",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    log_path = tmp_path / "gateway.log"
    http_requests, channels = 12, 0
    with samo_process("gateway", env=env, log=log_path, timeout_s=180, grace_s=30) as gateway:
        base = gateway.http_url
        for n in range(http_requests):  # a new connection each: the workers share the socket
            with httpx.Client(base_url=base, timeout=30) as http:
                assert detect(http, [SENTINEL], **{"X-Request-ID": f"worker-http-{n}"}).status_code == 200
        # Each channel is a new connection; the kernel spreads them over the workers' gRPC servers, once
        # both listen: HTTP is ready when the first worker is, and on a busy machine the second one's
        # gRPC server may start seconds later. At least 16 channels, more until both have served one.
        while channels < 16 or (len(_rpc_processes(log_path)) < 2 and channels < 200):
            with grpc.insecure_channel(gateway.grpc_target) as channel:
                samo_v1_pb2_grpc.SamoStub(channel).DetectEmotions(
                    samo_v1_pb2.DetectEmotionsRequest(texts=[SENTINEL]),
                    metadata=(("x-request-id", f"worker-rpc-{channels}"),),
                    timeout=30,
                )
            channels += 1
        pages = []
        for _ in range(4):  # whichever worker answers, it counts them all
            with httpx.Client(base_url=base, timeout=30) as http:
                pages.append(scrape(http))
    for page in pages:
        assert value(page, "samo_grpc_requests_total", method=DETECT, code="OK") == channels
        assert value(page, "samo_http_requests_total", route="/v1/emotions", status="200") == http_requests
    text = log_path.read_text()
    assert SENTINEL not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message", "process"} <= record.keys() for record in records)
    rpc_lines = [r for r in records if str(r.get("request_id", "")).startswith("worker-rpc-")]
    assert {r["request_id"] for r in rpc_lines} == {f"worker-rpc-{n}" for n in range(channels)}
    assert len({r["process"] for r in rpc_lines}) == 2, "both workers should have served calls"
    http_lines = [r for r in records if str(r.get("request_id", "")).startswith("worker-http-")]
    assert {r["request_id"] for r in http_lines} == {f"worker-http-{n}" for n in range(http_requests)}
