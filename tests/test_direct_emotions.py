"""POST /v1/emotions has two doors (gateway/http/emotions.py): `DirectEmotions` serves JSON bodies that
validate, the FastAPI route everything else. A client must not be able to tell them apart: the same
body sent as `application/json` (direct) and as `application/samo+json` (FastAPI's route, which reads
any `+json` type as JSON; the direct door takes `application/json` only) gets the same answer, good or
bad, and both count under the route's label."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import journal_corpus

TEXTS = journal_corpus()[:3]
GOOD = [
    {"texts": TEXTS},
    {"texts": TEXTS[:1], "threshold": 0.2, "top_k": 2},
    {"texts": TEXTS[1:], "model": "tiny_bert"},
]
BAD = [
    b'{"texts": []}',
    b'{"texts": ["fine"], "top_k": 0}',
    b'{"texts": ["fine"], "surprise": 1}',
    b'{"texts": ["fine"], "model": "no_such_model"}',
    b'{"texts": ["fine"',
    b"",
    b'["not", "an", "object"]',
]


ROUTED = "application/samo+json"


def _post(http: httpx.Client, body: bytes, content_type: str) -> httpx.Response:
    return http.post("/v1/emotions", content=body, headers={"content-type": content_type})


def _without_request_id(answer: dict) -> dict:
    answer.get("error", {}).pop("request_id", None)
    return answer


def _route_count(http: httpx.Client, status: str) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return sum(
        sample.value
        for family in families
        if family.name == "samo_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("route") == "/v1/emotions"
        and sample.labels.get("status") == status
    )


@pytest.mark.parametrize("body", GOOD, ids=["default", "threshold-top_k", "model"])
def test_a_valid_body_gets_the_same_answer_through_either_door(http: httpx.Client, body: dict) -> None:
    raw = json.dumps(body).encode()
    before = _route_count(http, "200")
    direct, routed = _post(http, raw, "application/json; charset=utf-8"), _post(http, raw, ROUTED)
    assert direct.status_code == routed.status_code == 200, (direct.text, routed.text)
    assert direct.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert direct.json() == routed.json()
    assert _route_count(http, "200") == before + 2


@pytest.mark.parametrize("body", BAD)
def test_a_bad_body_gets_the_same_error_through_either_door(http: httpx.Client, body: bytes) -> None:
    direct, routed = _post(http, body, "application/json"), _post(http, body, ROUTED)
    assert direct.status_code == routed.status_code and direct.status_code in (404, 422), direct.text
    assert _without_request_id(direct.json()) == _without_request_id(routed.json())
    assert direct.headers.get("x-request-id")
