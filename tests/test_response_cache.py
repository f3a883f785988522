"""Triton's response cache, opt-in per model (`samo export emotion --response-cache`) and per server
(`samo serve --response-cache-mb`): a repeated text is answered from the cache with the same scores, and
the gateway's health probes never repeat themselves, so a cached answer cannot hide a dead stub."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import InferenceServerClient

from exporters.emotion.export import EmotionExportOptions, export_emotion
from gateway.emotions.model import EmotionModel
from gateway.health.probes import probe_text
from gateway.triton_client import _infer_inputs
from samo.contracts.emotion import LOGITS
from samo.triton.local_server import LocalTriton, response_cache_args
from samo.triton.model_config import read_model_config
from tests.conftest import journal_corpus


def test_probes_never_send_the_same_text_twice() -> None:
    texts = [probe_text() for _ in range(100)]
    assert len(set(texts)) == 100


@pytest.fixture(scope="module")
def cached_repository(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    repository = tmp_path_factory.mktemp("cached-repository")
    export_emotion(
        EmotionExportOptions(
            model=str(tiny_bert), name="tiny_bert", repository=repository, response_cache=True
        )
    )
    return repository


def _infer(triton: LocalTriton, model: EmotionModel, text: str) -> np.ndarray:
    with InferenceServerClient(triton.grpc_url) as client:
        result = client.infer("tiny_bert", _infer_inputs(model.encode([text]).inputs))
        return result.as_numpy(LOGITS)


def _cache_hits(triton: LocalTriton) -> int:
    with InferenceServerClient(triton.grpc_url) as client:
        stats = client.get_inference_statistics("tiny_bert").model_stats[0]
        return stats.inference_stats.cache_hit.count


def test_a_repeated_text_is_answered_from_the_cache(cached_repository: Path, local_triton) -> None:
    assert read_model_config(cached_repository / "tiny_bert").response_cache.enable
    model = EmotionModel.load(cached_repository / "tiny_bert")
    first, other = journal_corpus()[:2]
    with local_triton(cached_repository, extra_args=response_cache_args(16 << 20)) as triton:
        answer = _infer(triton, model, first)
        assert _cache_hits(triton) == 0
        np.testing.assert_array_equal(_infer(triton, model, first), answer)
        assert _cache_hits(triton) == 1
        assert not np.array_equal(_infer(triton, model, other), answer)
        assert _cache_hits(triton) == 1


def test_a_server_without_a_cache_still_serves_the_model(cached_repository: Path, local_triton) -> None:
    model = EmotionModel.load(cached_repository / "tiny_bert")
    text = journal_corpus()[0]
    with local_triton(cached_repository) as triton:
        np.testing.assert_array_equal(_infer(triton, model, text), _infer(triton, model, text))
        assert _cache_hits(triton) == 0
