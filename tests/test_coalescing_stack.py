"""Coalescing against a real stack: over HTTP, through a gateway, to a real Triton, both of the test's own
(`gateway_stack`) on two tiny encoders of different architectures.

Concurrent requests join Triton calls (`samo_triton_call_texts` counts fewer calls than requests) and
each still gets the answer it gets alone; one at a time, each request is one call of its own texts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.emotion.export import EmotionExportOptions, export_emotion
from tests.conftest import QUIET_PROBES_S, Stack, journal_corpus

MODELS = ("tiny_bert", "tiny_distilbert")


@pytest.fixture(scope="module")
def stack(
    tiny_bert: Path, tiny_distilbert: Path, tmp_path_factory: pytest.TempPathFactory, gateway_stack
) -> Iterator[Stack]:
    repository = tmp_path_factory.mktemp("coalescing-repository")
    for name, checkpoint in zip(MODELS, (tiny_bert, tiny_distilbert), strict=True):
        export_emotion(EmotionExportOptions(model=str(checkpoint), name=name, repository=repository))
    with gateway_stack(
        repository,
        default_emotion_model=MODELS[0],
        # Set, not left to the default: the test needs concurrent calls to be joined.
        coalesce_in_flight=2,
        # Probes are not counted in `samo_triton_call_texts`, and are not what this test tests.
        health_probe_interval_s=QUIET_PROBES_S,
    ) as running:
        yield running


@pytest.fixture()
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway.http_url, timeout=30) as client:
        yield client


def _call_texts(http: httpx.Client) -> dict[str, tuple[float, float]]:
    """Per model: (Triton calls, texts in them) so far, from /metrics."""
    found: dict[str, list[float]] = {model: [0.0, 0.0] for model in MODELS}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        if family.name != "samo_triton_call_texts":
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model in found and sample.name.endswith("_count"):
                found[model][0] = sample.value
            elif model in found and sample.name.endswith("_sum"):
                found[model][1] = sample.value
    return {model: (calls, texts) for model, (calls, texts) in found.items()}


def _requests(count: int) -> list[dict]:
    rng = random.Random(20)
    corpus = journal_corpus()
    bodies = []
    for _ in range(count):
        body: dict = {
            "texts": [
                " ".join(rng.sample(corpus, rng.randint(1, 3))) for _ in range(rng.choice([1, 1, 2, 3]))
            ],
            "model": rng.choice(MODELS),
        }
        threshold, top_k = rng.choice([None, 0.02, 0.05, 0.5]), rng.choice([None, 1, 3])
        if threshold is not None:
            body["threshold"] = threshold
        if top_k is not None:
            body["top_k"] = top_k
        bodies.append(body)
    return bodies


def _deltas(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> tuple[float, float]:
    return (
        sum(after[m][0] - before[m][0] for m in MODELS),
        sum(after[m][1] - before[m][1] for m in MODELS),
    )


def test_500_mixed_concurrent_requests_get_their_answers_alone_in_fewer_triton_calls(
    stack: Stack, http: httpx.Client
) -> None:
    bodies = _requests(500)
    texts = sum(len(body["texts"]) for body in bodies)
    bad = {"texts": ["fine"], "top_k": 0}

    async def scenario() -> tuple[list[dict], list[httpx.Response | BaseException], tuple, tuple]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=stack.gateway.http_url, timeout=120, limits=limits) as client:
            start = _call_texts(http)
            alone = []
            for body in bodies:
                response = await client.post("/v1/emotions", json=body)
                assert response.status_code == 200, response.text
                alone.append(response.json())
            middle = _call_texts(http)
            leaving = asyncio.create_task(client.post("/v1/emotions", json=bodies[0]))
            together = asyncio.gather(
                *(client.post("/v1/emotions", json=body) for body in bodies[:250]),
                client.post("/v1/emotions", json=bad),
                *(client.post("/v1/emotions", json=body) for body in bodies[250:]),
                return_exceptions=True,
            )
            await asyncio.sleep(0.01)
            leaving.cancel()
            answers = await together
            end = _call_texts(http)
        return alone, list(answers), _deltas(start, middle), _deltas(middle, end)

    alone, together, one_by_one, concurrent = asyncio.run(scenario())
    refused = together.pop(250)
    assert isinstance(refused, httpx.Response) and refused.status_code == 422
    for index, (expected, response) in enumerate(zip(alone, together, strict=True)):
        assert isinstance(response, httpx.Response) and response.status_code == 200, (index, response)
        actual = response.json()
        assert actual["model"] == expected["model"]
        for one, other in zip(expected["results"], actual["results"], strict=True):
            assert [label["label"] for label in other["labels"]] == [
                label["label"] for label in one["labels"]
            ]
            assert (other["tokens"], other["truncated"]) == (one["tokens"], one["truncated"])
            assert other["scores"] == pytest.approx(one["scores"], abs=1e-6, rel=0), index
    # One at a time: each request one call of its own texts.
    assert one_by_one == (len(bodies), texts)
    # Together: fewer calls than requests; every text sent once (the request that left may have been).
    calls, sent = concurrent
    assert calls < len(bodies), f"{calls} Triton calls for {len(bodies)} requests"
    assert texts <= sent <= texts + len(bodies[0]["texts"])
