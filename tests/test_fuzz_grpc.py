"""Malformed, oversized and early-ending gRPC calls to every samo.v1 method, against the real gateway.

Bytes go through a generic channel call (no serializer), so the server sees exactly what is sent: bytes
that are not protobuf, fields of the wrong wire type, strings that are not UTF-8, empty messages, a
message over `grpc_max_message_bytes`, and streams that end or are cancelled part way. Each must be
answered INVALID_ARGUMENT or RESOURCE_EXHAUSTED (a clear refusal), never INTERNAL or UNKNOWN, and the
server must keep serving.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from samo.settings import GatewaySettings
from tests.conftest import Gateway
from tests.speech import JFK_WAV

SERVICE = samo_v1_pb2.DESCRIPTOR.services_by_name["Samo"]
METHODS = {method.name: method for method in SERVICE.methods}
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
TIMEOUT_S = 60


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


NOT_PROTOBUF = {
    # Field 0 does not exist in protobuf; wire types 6 and 7 do not exist either.
    "field-zero": b"\x00\x01\x02",
    "wire-type-7": b"\x0f\xff\xff\xff",
    # A length-delimited field declaring 1,000 bytes and carrying 3.
    "length-past-the-end": _tag(1, 2) + _varint(1000) + b"abc",
    # A varint that never ends (every byte has its continuation bit).
    "endless-varint": _tag(2, 0) + b"\xff" * 11,
    # Field 1 of every request here is a string or bytes; for strings, protobuf requires UTF-8.
    "string-not-utf8": _length_delimited(1, b"\xff\xfe\xc3\x28 \xed\xa0\x80"),
    "text-looks-like-json": b'{"texts": ["I had a good day"]}',
}
"""Bytes no samo.v1 request parses from (the JSON one: `{` is field 15 with wire type 3, a start group
that never ends)."""

WRONG_TYPES = {
    # Field 1 (texts / audio / data / text) as a varint, a 64-bit and a 32-bit number.
    "field-1-as-varint": _tag(1, 0) + _varint(42),
    "field-1-as-fixed64": _tag(1, 1) + b"\x00" * 8,
    "field-1-as-fixed32": _tag(1, 5) + b"\x00" * 4,
    # Fields 2 and 3 as strings: numbers in most requests (threshold, top_k, max_new_tokens...).
    "options-as-strings": _length_delimited(2, b"ten") + _length_delimited(3, b"ten"),
    "unknown-fields-only": _length_delimited(99, b"x" * 10) + _tag(100, 0) + _varint(7),
    "empty": b"",
}
"""Bytes that parse (protobuf keeps fields of the wrong wire type as unknown fields) into requests
missing what they need."""


def _random_bytes(seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 64, 1000])))


def call_raw(channel: grpc.Channel, method: str, payload: bytes, *, chunks: int = 1) -> grpc.StatusCode:
    """Sends `payload` as the request (as each of `chunks` messages of a client stream) and reads every
    response; the call's status code."""
    descriptor = METHODS[method]
    path = f"/{SERVICE.full_name}/{method}"
    try:
        if descriptor.client_streaming:
            responses = channel.stream_stream(path)(iter([payload] * chunks), timeout=TIMEOUT_S)
            list(responses)
        elif descriptor.server_streaming:
            list(channel.unary_stream(path)(payload, timeout=TIMEOUT_S))
        else:
            channel.unary_unary(path)(payload, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(gateway: Gateway) -> Iterator[grpc.Channel]:
    # The client may send what the server refuses: no client-side size limit.
    with grpc.insecure_channel(
        gateway.grpc_target, options=[("grpc.max_send_message_length", -1)]
    ) as channel:
        yield channel


def assert_still_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    answer = samo_v1_pb2_grpc.SamoStub(channel).DetectEmotions(
        samo_v1_pb2.DetectEmotionsRequest(texts=["A quiet evening with a good book."]), timeout=TIMEOUT_S
    )
    assert len(answer.results) == 1


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("payload", NOT_PROTOBUF.values(), ids=NOT_PROTOBUF.keys())
def test_bytes_that_are_not_protobuf_are_invalid_argument(
    channel: grpc.Channel, method: str, payload: bytes
) -> None:
    assert call_raw(channel, method, payload) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("payload", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_field_types_and_empty_messages_are_invalid_argument(
    channel: grpc.Channel, method: str, payload: bytes
) -> None:
    assert call_raw(channel, method, payload) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_bytes_are_refused_clearly(channel: grpc.Channel, method: str) -> None:
    """Random bytes: most do not parse, some parse as unknown fields; either way a clear refusal."""
    codes = [call_raw(channel, method, _random_bytes(seed)) for seed in range(40)]
    assert set(codes) <= REFUSALS, codes
    assert_still_serving(channel)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_message_over_the_size_limit_is_resource_exhausted(channel: grpc.Channel, method: str) -> None:
    limit = GatewaySettings().grpc_max_message_bytes  # the session gateway's, a default
    payload = _length_delimited(1, b"\x00" * (limit + 1024))
    assert call_raw(channel, method, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(channel)


@pytest.mark.parametrize(
    "request_",
    [
        samo_v1_pb2.DetectEmotionsRequest(texts=["fine"], threshold=float("nan")),
        samo_v1_pb2.DetectEmotionsRequest(texts=["fine"], threshold=-1),
        samo_v1_pb2.DetectEmotionsRequest(texts=["fine"], top_k=0),
        samo_v1_pb2.DetectEmotionsRequest(texts=["fine"] * 65),
        samo_v1_pb2.DetectEmotionsRequest(texts=["fine", " \t\n"]),
        samo_v1_pb2.SummarizeRequest(texts=["One. Two."], num_beams=1000),
        samo_v1_pb2.SummarizeRequest(texts=["One. Two."], long_input="explode"),
        samo_v1_pb2.SummarizeRequest(texts=["One. Two."], max_new_tokens=2**32 - 1),
        samo_v1_pb2.TranscribeRequest(audio=b"RIFF", beam_size=2**32 - 1),
        samo_v1_pb2.TranscribeRequest(audio=b"RIFF", task="dance"),
        samo_v1_pb2.AnalyzeJournalRequest(),
        samo_v1_pb2.AnalyzeJournalRequest(text="fine", top_k=0),
        samo_v1_pb2.AnalyzeJournalRequest(audio=b"", beam_size=0),
    ],
    ids=lambda r: type(r).__name__,
)
def test_options_out_of_range_are_invalid_argument(channel: grpc.Channel, request_) -> None:
    method = {
        samo_v1_pb2.DetectEmotionsRequest: "DetectEmotions",
        samo_v1_pb2.SummarizeRequest: "Summarize",
        samo_v1_pb2.TranscribeRequest: "Transcribe",
        samo_v1_pb2.AnalyzeJournalRequest: "AnalyzeJournal",
    }[type(request_)]
    assert call_raw(channel, method, request_.SerializeToString()) == grpc.StatusCode.INVALID_ARGUMENT


def test_streams_that_end_early(channel: grpc.Channel) -> None:
    """A stream with no chunk, with options and no audio, with the first half of a WAV file, and with
    a malformed chunk after a good one: clear refusals (the half file may also decode as a shorter
    clip), and the server keeps serving."""
    audio = JFK_WAV.read_bytes()
    first = samo_v1_pb2.AudioChunk(data=audio[:32_000], beam_size=1).SerializeToString()
    stub = samo_v1_pb2_grpc.SamoStub(channel)
    assert call_raw(channel, "TranscribeStream", b"", chunks=0) == grpc.StatusCode.INVALID_ARGUMENT
    options_only = samo_v1_pb2.AudioChunk(beam_size=1).SerializeToString()
    assert call_raw(channel, "TranscribeStream", options_only) == grpc.StatusCode.INVALID_ARGUMENT
    path = f"/{SERVICE.full_name}/TranscribeStream"
    with pytest.raises(grpc.RpcError) as broken:
        list(
            channel.stream_stream(path)(iter([first, NOT_PROTOBUF["length-past-the-end"]]), timeout=TIMEOUT_S)
        )
    assert broken.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    half = [samo_v1_pb2.AudioChunk(data=audio[: len(audio) // 2], beam_size=1)]
    try:
        events = list(stub.TranscribeStream(iter(half), timeout=TIMEOUT_S))
        assert events[-1].transcript.duration < 11.0
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert_still_serving(channel)


def test_streams_cancelled_part_way_leave_the_server_serving(channel: grpc.Channel) -> None:
    """The client gives up after sending some chunks, or after the first event of a journal stream."""
    audio = JFK_WAV.read_bytes()
    stub = samo_v1_pb2_grpc.SamoStub(channel)

    def chunks() -> Iterator[samo_v1_pb2.AudioChunk]:
        yield samo_v1_pb2.AudioChunk(data=audio[:32_000], beam_size=1)
        yield samo_v1_pb2.AudioChunk(data=audio[32_000:64_000])
        # Then nothing more: the call below is cancelled while the server waits for the rest.
        given_up.wait(TIMEOUT_S)

    given_up = threading.Event()
    call = stub.TranscribeStream(chunks(), timeout=TIMEOUT_S)
    call.cancel()
    given_up.set()
    with pytest.raises(grpc.RpcError) as cancelled:
        list(call)
    assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    journal = stub.StreamJournal(samo_v1_pb2.AnalyzeJournalRequest(audio=audio), timeout=TIMEOUT_S)
    next(journal)  # the first transcript segment
    journal.cancel()
    assert_still_serving(channel)


def test_many_malformed_calls_at_once_leave_the_server_serving(channel: grpc.Channel) -> None:
    """64 broken calls in flight together, over every method."""
    futures = []
    for seed in range(64):
        method = sorted(m for m, d in METHODS.items() if not d.client_streaming and not d.server_streaming)[
            seed % 4
        ]
        payload = list(NOT_PROTOBUF.values())[seed % len(NOT_PROTOBUF)] if seed % 2 else os.urandom(seed + 1)
        futures.append(
            channel.unary_unary(f"/{SERVICE.full_name}/{method}").future(payload, timeout=TIMEOUT_S)
        )
    codes = {future.exception().code() if future.exception() else grpc.StatusCode.OK for future in futures}
    assert codes <= REFUSALS, codes
    assert_still_serving(channel)
