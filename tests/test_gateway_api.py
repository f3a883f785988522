"""The HTTP API against the real gateway and a real Triton."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.context import RequestContext
from gateway.http.app import create_app
from load_tests.processes import free_port
from tests.conftest import LABELS, journal_corpus

GOLDEN_OPENAPI = Path(__file__).parent / "golden" / "openapi.json"
SECRET = "my secret diary entry about Alice"


def detect(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/v1/emotions", json=body)


def test_response_has_every_score_and_labels_above_threshold(http: httpx.Client) -> None:
    response = detect(
        http, texts=["I finally finished the project and I feel so proud of us.", "Lunch at noon."]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "emotion"
    assert body["model"]["version"] == "1"
    assert body["model"]["kind"] == "zero-shot"
    assert len(body["results"]) == 2
    for result in body["results"]:
        assert list(result["scores"]) == list(LABELS)
        scores = [label["score"] for label in result["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert all(score >= 0.5 for score in scores)
        above = {label for label, score in result["scores"].items() if score >= 0.5}
        assert {label["label"] for label in result["labels"]} == above
        assert result["truncated"] is False


def test_threshold_and_top_k_options(http: httpx.Client) -> None:
    text = ["My grandmother passed away last night and I cannot stop crying."]
    loose = detect(http, texts=text, threshold=0.0).json()["results"][0]
    assert len(loose["labels"]) == len(LABELS)
    top = detect(http, texts=text, threshold=0.0, top_k=3).json()
    assert [label["label"] for label in top["results"][0]["labels"]] == [
        label["label"] for label in loose["labels"][:3]
    ]
    assert top["options"] == {"threshold": 0.0, "top_k": 3}
    strict = detect(http, texts=text, threshold=1.0).json()["results"][0]
    assert strict["labels"] == []


def test_model_choice_and_truncation_flag(http: httpx.Client) -> None:
    long_text = " ".join(journal_corpus()[:40])
    body = detect(http, texts=[long_text, "short"], model="tiny_bert").json()
    assert body["model"]["name"] == "tiny_bert"
    assert body["model"]["kind"] == "fine-tuned"
    assert [r["truncated"] for r in body["results"]] == [True, False]
    assert body["results"][0]["tokens"] == 64


def test_every_concurrent_response_equals_its_answer_alone(gateway_url: str) -> None:
    corpus = journal_corpus()
    texts = [" ".join(corpus[i : i + 1 + i % 5]) for i in range(64)]  # 64 distinct texts, many lengths

    async def scenario(model: str) -> tuple[list[dict], list[dict]]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
            alone = []
            for text in texts:
                response = await client.post("/v1/emotions", json={"texts": [text], "model": model})
                alone.append(response.json()["results"][0])
            responses = await asyncio.gather(
                *(client.post("/v1/emotions", json={"texts": [text], "model": model}) for text in texts)
            )
            return alone, [r.json()["results"][0] for r in responses]

    for model in ("tiny_bert", "emotion"):
        alone, together = asyncio.run(scenario(model))
        for index, (expected, actual) in enumerate(zip(alone, together, strict=True)):
            assert [label["label"] for label in actual["labels"]] == [
                label["label"] for label in expected["labels"]
            ]
            for label in LABELS:
                assert actual["scores"][label] == pytest.approx(expected["scores"][label], abs=1e-5), (
                    model,
                    index,
                )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"texts": []}, "texts: List should have at least 1 item after validation, not 0"),
        ({"texts": [""]}, "texts: Value error, texts at positions 0 are empty or whitespace only"),
        (
            {"texts": ["fine", " \n\t"]},
            "texts: Value error, texts at positions 1 are empty or whitespace only",
        ),
        ({"texts": ["a"] * 65}, "texts: List should have at most 64 items after validation, not 65"),
        ({"texts": ["a" * 20_001]}, "texts[0]: String should have at most 20000 characters"),
        ({"texts": [SECRET, 3]}, "texts[1]: Input should be a valid string"),
        ({"texts": SECRET}, "texts: Input should be a valid list"),
        ({}, "texts: field required"),
        ({"texts": ["a"], "threshold": 2}, "threshold: Input should be less than or equal to 1"),
        ({"texts": ["a"], "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ({"texts": ["a"], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_input_gets_422_with_a_message(http: httpx.Client, body: dict, message: str) -> None:
    response = http.post("/v1/emotions", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["message"] == message.replace("Value error, ", "")
    assert SECRET not in response.text


def test_invalid_json_and_unknown_model(http: httpx.Client) -> None:
    response = http.post("/v1/emotions", content=b'{"texts": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "request body is not valid JSON"
    response = detect(http, texts=["hello"], model="nope")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "type": "not_found",
        "message": "unknown emotion model `nope`; available: emotion, tiny_bert, tiny_distilbert",
        "request_id": response.headers["x-request-id"],
    }
    assert detect(http, texts=["still up"]).status_code == 200


def test_health_docs_and_metrics(http: httpx.Client) -> None:
    assert http.get("/health/live").json() == {"status": "live"}
    assert http.get("/health/ready").json() == {"status": "ready"}
    assert http.get("/docs").status_code == 200
    detect(http, texts=["counted"])
    metrics = http.get("/metrics").text
    assert 'samo_http_requests_total{route="/v1/emotions",status="200"}' in metrics


def test_openapi_document_is_pinned(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    if os.environ.get("SAMO_UPDATE_GOLDEN"):
        GOLDEN_OPENAPI.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    assert document == json.loads(GOLDEN_OPENAPI.read_text()), (
        "API changed: SAMO_UPDATE_GOLDEN=1 if deliberate"
    )


def test_triton_unreachable_gives_503_with_retry_after(
    serving_repository: Path, make_gateway_settings
) -> None:
    settings = make_gateway_settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}", model_repository=serving_repository, grpc_port=0
    )
    with TestClient(create_app(settings=settings)) as client:
        response = client.post("/v1/emotions", json={"texts": ["hello"]})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["type"] == "upstream_unavailable"
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "the inference server is unavailable; retry shortly"
        assert client.get("/health/live").status_code == 200


def test_overload_gives_429(triton, make_gateway_settings) -> None:
    settings = make_gateway_settings(triton, admission_budget=1, grpc_port=0)
    app = create_app(settings=settings)
    with TestClient(app) as client:
        held = app.state.operations.admit(RequestContext(), 1)  # one text already waiting on Triton
        response = client.post("/v1/emotions", json={"texts": ["hello"]})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        held.release()
        assert client.post("/v1/emotions", json={"texts": ["hello"]}).status_code == 200


def test_entry_text_never_reaches_the_logs(http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        detect(http, texts=[SECRET])
        detect(http, texts=[SECRET, 5])
        detect(http, texts=[SECRET], model="nope")
    assert SECRET not in caplog.text
