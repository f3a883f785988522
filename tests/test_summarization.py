"""The extractive summarizer: sentence splitting and MMR selection (unit), /v1/summarize (real Triton)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from gateway.summarization.extractive import SelectionBudget, lead, select_sentences
from gateway.summarization.sentences import split_sentences

ENTRY = (
    "Today started badly because I overslept and missed the bus. "
    "At work the team finally shipped the new release after weeks of effort. "
    "My manager thanked everyone for the long hours we put into the release. "
    "I had a sandwich for lunch. "
    "In the evening I called my sister and we talked about our parents' health. "
    "She is worried about dad's heart and so am I. "
    "I want to visit them next weekend. "
    "Before bed I read a few pages of a novel."
)


def test_split_sentences_keeps_abbreviations_and_breaks_paragraphs() -> None:
    text = 'I met Dr. Smith today. It went well! Then we ate.\n\nNew day. "Wow," she said. Prices rose 3.5 percent'
    assert split_sentences(text) == [
        "I met Dr. Smith today.",
        "It went well!",
        "Then we ate.",
        "New day.",
        '"Wow," she said.',
        "Prices rose 3.5 percent",
    ]
    assert split_sentences("  ") == []


def _unit(vectors: list[list[float]]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_mmr_prefers_central_sentences_and_skips_repeats() -> None:
    embeddings = _unit([[1, 0.3, 0.1], [1, 0.3, 0.1], [1, -0.3, 0.1], [0, 0.1, 1]])
    chosen = select_sentences(embeddings, [10, 10, 10, 10], SelectionBudget(max_sentences=2))
    assert chosen == [0, 2]  # 1 repeats 0; 3 is off topic
    assert select_sentences(embeddings, [10] * 4, SelectionBudget(max_sentences=2, relevance=1.0)) == [0, 1]


def test_token_budget_and_order() -> None:
    embeddings = _unit([[1, 0], [0.9, 0.4], [0.8, 0.6], [0.2, 1]])
    chosen = select_sentences(embeddings, [50, 5, 5, 5], SelectionBudget(max_sentences=4, max_tokens=12))
    assert chosen == sorted(chosen)
    assert sum([50, 5, 5, 5][i] for i in chosen) <= 12
    assert 0 not in chosen
    assert select_sentences(np.zeros((0, 2)), [], SelectionBudget()) == []
    assert lead([3, 3, 3], 2) == [0, 1]


def test_summary_is_three_sentences_of_the_entry_in_order(http: httpx.Client) -> None:
    response = http.post("/v1/summarize", json={"texts": [ENTRY, ENTRY + " " + ENTRY.split(". ")[1] + "."]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "extractive"
    assert body["model"]["method"] == "extractive"
    first, repeated = body["results"]
    sentences = split_sentences(ENTRY)
    assert first["sentence_count"] == len(sentences) == 8
    assert len(first["sentences"]) == 3
    assert first["sentences"] == sorted(first["sentences"])
    assert first["summary"] == " ".join(sentences[i] for i in first["sentences"])
    assert "sandwich" not in first["summary"]
    picked = [split_sentences(ENTRY + " x")[i] for i in repeated["sentences"]]
    assert len(set(picked)) == len(picked)  # no sentence twice


def test_token_bound(http: httpx.Client) -> None:
    short = http.post("/v1/summarize", json={"texts": [ENTRY], "max_new_tokens": 20}).json()["results"][0]
    assert 1 <= len(short["sentences"]) <= 2


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"texts": [" "]}, 422, "texts: texts at positions 0 are empty or whitespace only"),
        ({"texts": ["a."], "num_beams": 0}, 422, "num_beams: Input should be greater than or equal to 1"),
        (
            {"texts": ["a."], "max_new_tokens": 100000},
            422,
            "max_new_tokens: Input should be less than or equal to 1024",
        ),
        (
            {"texts": ["a."], "max_new_tokens": 5, "min_new_tokens": 9},
            422,
            "body: min_new_tokens (9) must not exceed max_new_tokens (5)",
        ),
        ({"texts": ["a."] * 65}, 422, "texts: List should have at most 64 items after validation, not 65"),
        (
            {"texts": ["a."], "model": "t5-small"},
            404,
            "unknown summarization model `t5-small`; available: tiny_t5, extractive",
        ),
    ],
)
def test_bad_summary_requests(http: httpx.Client, body: dict, status: int, message: str) -> None:
    response = http.post("/v1/summarize", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"] == message
