"""samo.v1 over gRPC: parity with HTTP, the same error meanings, health, reflection, pinned proto."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from google.protobuf import descriptor_pb2, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.client import GrpcClient, HttpClient
from gateway.errors import ErrorType, SamoError
from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.http.app import create_app
from load_tests.processes import free_port
from tests.conftest import Gateway, journal_corpus
from tests.speech import JFK_WAV

GOLDEN_PROTO = Path(__file__).parent / "golden" / "samo_v1.descriptor.txt"


@pytest.fixture()
def clients(gateway: Gateway):
    with HttpClient(gateway.http_url) as http, GrpcClient(gateway.grpc_target) as rpc:
        yield http, rpc


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"threshold": 0.2, "top_k": 2},
        {"model": "tiny_bert"},
    ],
)
def test_http_and_grpc_give_identical_results(clients, kwargs: dict) -> None:
    http, rpc = clients
    texts = [journal_corpus()[7], " ".join(journal_corpus()[40:44]), "Lunch at noon."]
    via_http = http.detect_emotions(texts, **kwargs)
    via_grpc = rpc.detect_emotions(texts, **kwargs)
    assert via_grpc == via_http
    assert len(via_grpc.results) == 3


@pytest.mark.parametrize(
    ("texts", "kwargs", "error_type"),
    [
        ([], {}, ErrorType.INVALID_INPUT),
        (["fine", "   "], {}, ErrorType.INVALID_INPUT),
        (["a"] * 65, {}, ErrorType.INVALID_INPUT),
        (["fine"], {"threshold": 1.5}, ErrorType.INVALID_INPUT),
        (["fine"], {"model": "nope"}, ErrorType.NOT_FOUND),
    ],
)
def test_errors_carry_the_same_meaning_and_message(clients, texts, kwargs, error_type) -> None:
    http, rpc = clients
    with pytest.raises(SamoError) as over_http:
        http.detect_emotions(texts, **kwargs)
    with pytest.raises(SamoError) as over_grpc:
        rpc.detect_emotions(texts, **kwargs)
    assert over_http.value.type is over_grpc.value.type is error_type
    assert over_http.value.message == over_grpc.value.message


def test_invalid_argument_status_code(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=[]), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "texts: List should have at least 1 item after validation, not 0"


def _health(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _watch_until_serving(target: str, service: str, timeout_s: float) -> int:
    """The last status grpc.health.v1 Watch streamed for `service`, SERVING as soon as it says so."""
    status = health_pb2.HealthCheckResponse.UNKNOWN
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        updates = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        try:
            for update in updates:
                status = update.status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        finally:
            updates.cancel()
    return status


def test_health_serving_with_triton_up(gateway: Gateway) -> None:
    # NOT_SERVING until the first probe of every model answers (seconds on a busy machine); a client
    # follows the status with Watch, as this does.
    for service in ("", "samo.v1.Samo", "samo.v1.Samo/emotion", "samo.v1.Samo/whisper"):
        status = _watch_until_serving(gateway.grpc_target, service, timeout_s=120)
        report = httpx.get(f"{gateway.http_url}/health/models", timeout=30).json()
        assert status == health_pb2.HealthCheckResponse.SERVING, (service, report)
    assert _health(gateway.grpc_target, "") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {service.name for service in response.list_services_response.service}
    assert {"samo.v1.Samo", "grpc.health.v1.Health"} <= names


def test_triton_down_is_unavailable_on_both_transports(
    serving_repository: Path, make_gateway_settings
) -> None:
    grpc_port = free_port()
    settings = make_gateway_settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        model_repository=serving_repository,
        grpc_port=grpc_port,
        health_probe_interval_s=0.2,
    )
    with TestClient(create_app(settings=settings)) as http:
        response = http.post("/v1/emotions", json={"texts": ["hello"]})
        assert response.status_code == 503
        with GrpcClient(f"127.0.0.1:{grpc_port}") as rpc, pytest.raises(SamoError) as error:
            rpc.detect_emotions(["hello"])
        assert error.value.type is ErrorType.UNAVAILABLE
        assert error.value.message == response.json()["error"]["message"]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = samo_v1_pb2_grpc.SamoStub(channel)
            with pytest.raises(grpc.RpcError) as raw:
                stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=["hello"]), timeout=10)
        assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _health(f"127.0.0.1:{grpc_port}", "") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_proto_is_pinned() -> None:
    descriptor = descriptor_pb2.FileDescriptorProto()
    samo_v1_pb2.DESCRIPTOR.CopyToProto(descriptor)
    rendered = text_format.MessageToString(descriptor)
    if os.environ.get("SAMO_UPDATE_GOLDEN"):
        GOLDEN_PROTO.write_text(rendered)
    assert rendered == GOLDEN_PROTO.read_text(), "samo.v1 changed: SAMO_UPDATE_GOLDEN=1 if deliberate"


def test_transcribe_is_identical_over_http_and_grpc(clients) -> None:
    http, rpc = clients
    audio = JFK_WAV.read_bytes()
    via_http = http.transcribe(audio, beam_size=2)
    via_grpc = rpc.transcribe(audio, beam_size=2)
    assert via_grpc == via_http
    assert "country" in via_grpc.text


@pytest.mark.parametrize(
    ("audio", "kwargs", "error_type"),
    [
        (b"", {}, ErrorType.INVALID_INPUT),
        (b"dear diary, not audio\n" * 40, {}, ErrorType.UNSUPPORTED_MEDIA),
        (JFK_WAV.read_bytes(), {"language": "de"}, ErrorType.INVALID_INPUT),
        (JFK_WAV.read_bytes(), {"beam_size": 0}, ErrorType.INVALID_INPUT),
        (JFK_WAV.read_bytes(), {"model": "nope"}, ErrorType.NOT_FOUND),
    ],
)
def test_transcribe_errors_match_across_transports(clients, audio: bytes, kwargs: dict, error_type) -> None:
    http, rpc = clients
    with pytest.raises(SamoError) as over_http:
        http.transcribe(audio, **kwargs)
    with pytest.raises(SamoError) as over_grpc:
        rpc.transcribe(audio, **kwargs)
    assert over_http.value.type is over_grpc.value.type is error_type
    assert over_http.value.message == over_grpc.value.message
    assert "diary" not in over_grpc.value.message


JOURNAL_ENTRY = "I finally finished the project and I feel so proud of us. Then dad called and I am worried."


def test_analyze_journal_matches_http(gateway: Gateway) -> None:
    over_http = httpx.post(f"{gateway.http_url}/v1/journal", json={"text": JOURNAL_ENTRY}, timeout=60).json()
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        analysis = stub.AnalyzeJournal(samo_v1_pb2.AnalyzeJournalRequest(text=JOURNAL_ENTRY), timeout=60)
    assert analysis.source == "text" and not analysis.HasField("transcript")
    # Equal up to fp32 batching noise: the entry may share a Triton batch with its own sentences.
    assert {s.label: s.score for s in analysis.emotions.scores} == pytest.approx(
        over_http["emotions"]["scores"], abs=1e-5
    )
    assert [s.text for s in analysis.sentences] == [s["text"] for s in over_http["sentences"]]
    assert analysis.summary.summary == over_http["summary"]["summary"]
    assert analysis.emotion_model.name == "emotion" and analysis.summarization_model.name == "extractive"


def test_stream_journal_sends_segments_then_the_analysis(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        request = samo_v1_pb2.AnalyzeJournalRequest(audio=JFK_WAV.read_bytes())
        kinds = [event.WhichOneof("event") for event in stub.StreamJournal(request, timeout=120)]
    assert kinds[-1] == "analysis" and set(kinds[:-1]) == {"segment"} and len(kinds) >= 2


def test_journal_errors_match_http(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.http_url}/v1/journal", json={"text": " "}, timeout=30)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.AnalyzeJournal(samo_v1_pb2.AnalyzeJournalRequest(text=" "), timeout=30)
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.StreamJournal(samo_v1_pb2.AnalyzeJournalRequest(audio=b"not audio" * 20), timeout=30))
    assert response.status_code == 422
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == response.json()["error"]["message"]
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_summarize_matches_http(gateway: Gateway) -> None:
    texts = [JOURNAL_ENTRY + " I will call him tomorrow. Work can wait."]
    over_http = httpx.post(f"{gateway.http_url}/v1/summarize", json={"texts": texts}, timeout=60).json()
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        response = stub.Summarize(samo_v1_pb2.SummarizeRequest(texts=texts), timeout=60)
        with pytest.raises(grpc.RpcError) as error:
            stub.Summarize(samo_v1_pb2.SummarizeRequest(texts=texts, num_beams=0), timeout=60)
    assert response.model.name == "extractive"
    assert response.results[0].summary == over_http["results"][0]["summary"]
    assert list(response.results[0].sentences) == over_http["results"][0]["sentences"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "num_beams: Input should be greater than or equal to 1"


def test_transcribe_stream_takes_chunks_and_streams_segments(gateway: Gateway) -> None:
    audio = JFK_WAV.read_bytes()
    chunks = [audio[i : i + 32_000] for i in range(0, len(audio), 32_000)]
    requests = [samo_v1_pb2.AudioChunk(data=chunks[0], beam_size=2)]
    requests += [samo_v1_pb2.AudioChunk(data=chunk) for chunk in chunks[1:]]
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        events = list(stub.TranscribeStream(iter(requests), timeout=120))
        unary = stub.Transcribe(samo_v1_pb2.TranscribeRequest(audio=audio, beam_size=2), timeout=120)
        with pytest.raises(grpc.RpcError) as empty:
            list(stub.TranscribeStream(iter([]), timeout=30))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "transcript" and set(kinds[:-1]) == {"segment"}
    assert [e.segment for e in events[:-1]] == list(events[-1].transcript.segments)
    assert events[-1].transcript == unary
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.details() == "send the audio in at least one chunk"


def test_typed_clients_summarize_alike(clients) -> None:
    http, rpc = clients
    texts = [JOURNAL_ENTRY + " I will call him tomorrow. Work can wait."]
    assert http.summarize(texts, max_new_tokens=40) == rpc.summarize(texts, max_new_tokens=40)
    with pytest.raises(SamoError) as over_http:
        http.summarize(texts, model="t5-small")
    with pytest.raises(SamoError) as over_grpc:
        rpc.summarize(texts, model="t5-small")
    assert over_http.value.type is over_grpc.value.type is ErrorType.NOT_FOUND
    assert over_http.value.message == over_grpc.value.message


def test_typed_clients_analyze_journal_alike(clients) -> None:
    http, rpc = clients
    for entry in ({"text": JOURNAL_ENTRY, "top_k": 2}, {"audio": JFK_WAV.read_bytes(), "beam_size": 2}):
        via_http, via_grpc = http.analyze_journal(**entry), rpc.analyze_journal(**entry)
        assert via_grpc.text == via_http.text and via_grpc.transcript == via_http.transcript
        assert via_grpc.summary == via_http.summary
        assert [s.text for s in via_grpc.sentences] == [s.text for s in via_http.sentences]
        # Scores agree to fp32 batching noise: the entry shares Triton batches with its sentences.
        assert via_grpc.emotions.scores == pytest.approx(via_http.emotions.scores, abs=1e-5)
        assert via_grpc.models == via_http.models
    with pytest.raises(ValueError, match="exactly one of `text` and `audio`"):
        http.analyze_journal()
