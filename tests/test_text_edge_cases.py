"""Text edge cases on every text route (emotions, summaries, journal), over HTTP and gRPC, against the
real gateway and Triton: megabyte strings, control characters, lone surrogates, mixed scripts, one token
repeated 10,000 times, empty and whitespace-only texts. Each gets a 4xx with the error body, or a 200
whose results are sane; never a 5xx, and the gateway keeps answering."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import grpc
import httpx
import pytest

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from samo.settings import GatewaySettings
from tests.conftest import LABELS, Gateway

LIMITS = GatewaySettings()  # the session gateway's limits, defaults
CONTROL = "".join(chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)])
TEXTS = {
    "control-characters": f"Today{CONTROL}I felt calm\x00 and then\x1b[31m angry\r\n\tat work.",
    "only-control-characters": CONTROL,
    "zero-width-only": "\u200b\u200c\u200d\u2060\ufeff",
    "mixed-scripts": "Сегодня я счастлива. 今日はとても疲れた。 오늘은 슬펐다. היום היה טוב. اليوم كان جميلا. Today 🙂🎉.",
    "combining-marks": "Z" + "\u0301\u0302\u0303\u0304" * 2000 + " I am fine.",
    "rtl-override": "I am \u202eyppah\u202c today.",
    "one-token-10k-times": " ".join(["sad"] * 10_000)[: LIMITS.max_text_chars],
    "one-sentence-repeated": "I miss my sister. " * 1000,
    "longest-allowed": ("Work was hard. Dinner was lovely. " * 1000)[: LIMITS.max_text_chars],
    "emoji-only": "😀😢😡" * 500,
}
"""Texts within the limits: each must be answered 200 with sane results."""

REFUSED = {
    "empty": ("", 422),
    "whitespace-only": (" \t\n\r\u3000\u2003\u00a0", 422),
    "one-past-the-limit": ("a" * (LIMITS.max_text_chars + 1), 422),
    "a-megabyte": ("diary " * ((1 << 20) // 6), 422),
}
"""Texts past the limits or without content: each must be refused with 422."""


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.http_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def stub(gateway: Gateway) -> Iterator[samo_v1_pb2_grpc.SamoStub]:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield samo_v1_pb2_grpc.SamoStub(channel)


def post(http: httpx.Client, route: str, text: str) -> httpx.Response:
    body = {"text": text} if route == "/v1/journal" else {"texts": [text]}
    return http.post(route, json=body)


def assert_sane_emotions(result: dict) -> None:
    assert list(result["scores"]) == list(LABELS)
    assert all(0.0 <= score <= 1.0 and math.isfinite(score) for score in result["scores"].values())
    assert result["tokens"] >= 2  # at least the special tokens


def assert_sane(route: str, body: dict) -> None:
    if route == "/v1/emotions":
        assert_sane_emotions(body["results"][0])
    elif route == "/v1/summarize":
        summary = body["results"][0]
        assert isinstance(summary["summary"], str)
        assert all(0 <= i < summary["sentence_count"] for i in summary["sentences"])
    else:
        assert body["source"] == "text"
        if body["emotions"] is not None:
            assert_sane_emotions(body["emotions"])
        assert isinstance(body["summary"]["summary"], str)


def assert_error_body(response: httpx.Response, error_type: str) -> None:
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"].strip()


ROUTES = ["/v1/emotions", "/v1/summarize", "/v1/journal"]


@pytest.mark.parametrize(("route", "name"), itertools.product(ROUTES, TEXTS))
def test_odd_texts_within_the_limits_get_sane_results(http: httpx.Client, route: str, name: str) -> None:
    response = post(http, route, TEXTS[name])
    assert response.status_code == 200, response.text[:500]
    assert_sane(route, response.json())


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", REFUSED)
def test_texts_past_the_limits_or_blank_are_422(http: httpx.Client, route: str, name: str) -> None:
    text, status = REFUSED[name]
    response = post(http, route, text)
    assert response.status_code == status, response.text[:500]
    assert_error_body(response, "invalid_input")
    if len(text) > 100:
        assert text[:100] not in response.text  # never echoed


@pytest.mark.parametrize("route", ROUTES)
def test_one_token_repeated_10k_times_is_truncated(http: httpx.Client, route: str) -> None:
    body = post(http, route, TEXTS["one-token-10k-times"]).json()
    if route == "/v1/emotions":
        assert body["results"][0]["truncated"] is True
    elif route == "/v1/journal":
        assert body["emotions"]["truncated"] is True


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("surrogate", ["\\ud800", "\\udfff", "x\\udbffy", "\\ud83d"])
def test_lone_surrogates_in_json_are_refused(http: httpx.Client, route: str, surrogate: str) -> None:
    """A lone surrogate is valid JSON (`"\\ud800"`) but no character: refused, not passed to the tokenizer."""
    field = '"text"' if route == "/v1/journal" else '"texts"'
    value = f'"I feel {surrogate} today"'
    raw = f"{{{field}: {value if route == '/v1/journal' else '[' + value + ']'}}}"
    response = http.post(route, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:500]
    assert_error_body(response, "invalid_input")


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_the_byte_limit_is_413(http: httpx.Client, route: str) -> None:
    text = "x" * (LIMITS.max_body_bytes + 1)
    response = post(http, route, text)
    assert response.status_code == 413
    assert_error_body(response, "too_large")
    assert http.get("/health/live").status_code == 200


def grpc_call(stub: samo_v1_pb2_grpc.SamoStub, method: str, text: str):
    if method == "DetectEmotions":
        return stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=[text]), timeout=120)
    if method == "Summarize":
        return stub.Summarize(samo_v1_pb2.SummarizeRequest(texts=[text]), timeout=120)
    return stub.AnalyzeJournal(samo_v1_pb2.AnalyzeJournalRequest(text=text), timeout=120)


GRPC_METHODS = ["DetectEmotions", "Summarize", "AnalyzeJournal"]


@pytest.mark.parametrize(("method", "name"), itertools.product(GRPC_METHODS, TEXTS))
def test_odd_texts_over_grpc_get_results(stub, method: str, name: str) -> None:
    answer = grpc_call(stub, method, TEXTS[name])
    if method == "DetectEmotions":
        scores = [s.score for s in answer.results[0].scores]
        assert len(scores) == len(LABELS) and all(0.0 <= s <= 1.0 for s in scores)
    elif method == "Summarize":
        assert len(answer.results) == 1
    else:
        assert answer.source == "text"


@pytest.mark.parametrize("method", GRPC_METHODS)
@pytest.mark.parametrize("name", REFUSED)
def test_texts_past_the_limits_or_blank_over_grpc_are_invalid_argument(stub, method: str, name: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        grpc_call(stub, method, REFUSED[name][0])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.value.trailing_metadata())["samo-error-type"] == "invalid_input"


def test_the_gateway_still_answers_after_the_edge_cases(http: httpx.Client, stub) -> None:
    assert http.get("/health/live").status_code == 200
    response = post(http, "/v1/emotions", "A good day, after all.")
    assert response.status_code == 200
    assert_sane_emotions(response.json()["results"][0])
    assert len(grpc_call(stub, "DetectEmotions", "A good day, after all.").results) == 1
