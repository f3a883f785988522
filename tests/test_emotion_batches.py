"""The emotion service sends at most the card's `max_batch_size` texts per Triton request."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from gateway.context import RequestContext
from gateway.emotions.model import discover_emotion_models
from gateway.emotions.service import EmotionService
from gateway.triton_client import TritonClient
from samo.triton.local_server import LocalTriton
from tests.conftest import journal_corpus


def test_texts_beyond_the_batch_limit_are_split_and_kept_in_order(
    triton: LocalTriton, serving_repository: Path
) -> None:
    model = discover_emotion_models(serving_repository)["tiny_bert"]
    small = dataclasses.replace(model, card=model.card.model_copy(update={"max_batch_size": 3}))
    texts = journal_corpus()[:11]

    async def run() -> tuple:
        client = TritonClient(triton.grpc_url, timeout_s=30)
        try:
            whole = await EmotionService(client, {"tiny_bert": model}, "tiny_bert").detect(
                RequestContext(), texts
            )
            split = await EmotionService(client, {"tiny_bert": small}, "tiny_bert").detect(
                RequestContext(), texts
            )
        finally:
            await client.close()
        return whole, split

    whole, split = asyncio.run(run())
    assert len(split.results) == len(texts)
    for one, other in zip(whole.results, split.results, strict=True):
        assert one.labels == other.labels and one.tokens == other.tokens
        assert one.scores == pytest.approx(other.scores, abs=1e-5)
