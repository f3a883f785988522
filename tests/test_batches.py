"""Batch jobs against the session's real Triton and gateway (embedded SQLite store): the OpenAI SDK's
files and batches calls, answers equal to the synchronous ones, malformed lines and unusable files,
cancel, expiry, retrying failed lines, progress events, webhooks, tenants and encryption at rest.
The queue across processes (PostgreSQL, SIGKILL) is tests/test_batch_workers.py."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, journal_corpus
from tests.speech import JFK_WAV


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def emotion_line(custom_id: str, texts: list[str], **options: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/emotions", "body": {"texts": texts, **options}}


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    corpus = journal_corpus()
    return [" ".join(rng.sample(corpus, 2)) for _ in range(count)]


def assert_same_emotions(batched: dict[str, Any], alone: dict[str, Any]) -> None:
    """Equal answers: the same fields, labels and tokens; scores equal up to the float rounding that
    another dynamic batch's padding gives (as tests/test_gateway_api.py compares concurrent answers)."""
    assert batched.keys() == alone.keys() and batched["model"] == alone["model"]
    assert len(batched["results"]) == len(alone["results"])
    for got, expected in zip(batched["results"], alone["results"], strict=True):
        assert (got["tokens"], got["truncated"]) == (expected["tokens"], expected["truncated"])
        assert [x["label"] for x in got["labels"]] == [x["label"] for x in expected["labels"]]
        assert [x["score"] for x in got["labels"]] == pytest.approx([x["score"] for x in expected["labels"]], abs=1e-5)
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-5)
        assert got.keys() == expected.keys()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.http_url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def wait_for(client: openai.OpenAI, batch_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.2)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_the_openai_sdk_runs_a_batch_whose_answers_equal_the_synchronous_ones(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    entries = texts(24, seed=1)
    lines = [emotion_line(f"entry-{i}", [text], top_k=3) for i, text in enumerate(entries)]
    lines.insert(5, {"custom_id": "no-body", "method": "POST", "url": "/v1/emotions"})
    raw = jsonl(lines).replace(b"\n", b"\n{not json\n", 1)  # line 2: malformed
    uploaded = client.files.create(file=("entries.jsonl", raw), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(raw)
    assert client.files.retrieve(uploaded.id).filename == "entries.jsonl"
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/emotions",  # pyright: ignore[reportArgumentType]  # SAMO's endpoints
        completion_window="24h",
        metadata={"job": "reanalysis"},
    )
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "reanalysis"}
    done = wait_for(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (26, 24, 2)

    output = read_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"entry-{i}" for i in range(24)]  # input order
    for line, text in zip(output, entries, strict=True):
        synchronous = http.post("/v1/emotions", json={"texts": [text], "top_k": 3})
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert_same_emotions(line["response"]["body"], synchronous.json())
    errors = read_lines(client, done.error_file_id)
    assert [(e["custom_id"], e["error"]["line"], e["error"]["code"]) for e in errors] == [
        (None, 2, "invalid_json_line"),
        ("no-body", 7, "invalid_request"),
    ]
    assert errors[1]["error"]["message"] == "line 7: body: field required"

    listed = client.batches.list(limit=1)
    assert listed.data[0].id == batch.id
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)  # deleted with its input file, outputs included
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(done.output_file_id or "")
