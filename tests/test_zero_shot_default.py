"""Smoke test of the embedded default: real MiniLM weights, served through Triton and the gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from samo.contracts.emotion import EmotionModelCard


def test_default_model_card_names_it_zero_shot(default_export: Path) -> None:
    card = EmotionModelCard.read(default_export)
    assert card.kind == "zero-shot"
    assert "MiniLM" in card.source
    assert "Not trained on GoEmotions" in card.description
    assert len(card.labels) == 28
    assert card.activation == "none"  # the graph itself outputs probabilities


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I finally finished the project and I feel so proud of us.", "pride"),
        ("My grandmother passed away last night and I can't stop crying.", "grief"),
        ("I have a job interview tomorrow and my hands are shaking.", "nervousness"),
        ("Wow, I did not expect them to throw me a surprise party!", "surprise"),
        ("Had lunch at noon, then went back to work.", "neutral"),
    ],
)
def test_clear_sentences_get_the_obvious_top_label(http: httpx.Client, text: str, expected: str) -> None:
    result = http.post("/v1/emotions", json={"texts": [text]}).json()["results"][0]
    assert result["labels"], "nothing above threshold"
    assert result["labels"][0]["label"] == expected
