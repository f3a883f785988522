"""The shared seq2seq engine against transformers' `generate`, token for token, over ONNX Runtime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from exporters.seq2seq_onnx import export_with_past
from samo.generation import GenerationSettings, SpecialTokens, generate
from samo.generation.onnx_seq2seq import OnnxSeq2Seq
from samo.generation.search import Request
from tests.conftest import journal_corpus
from tests.seq2seq_models import build_tiny_bart, build_tiny_t5

MAX_NEW_TOKENS = 14
SETTINGS = {
    "greedy": {"num_beams": 1},
    "beam4": {"num_beams": 4},
    "beam4-length-penalty-early": {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True},
    "beam4-never-ngram-min": {
        "num_beams": 4,
        "early_stopping": "never",
        "no_repeat_ngram_size": 3,
        "min_new_tokens": 8,
        "length_penalty": 0.5,
    },
    "greedy-penalties": {
        "num_beams": 1,
        "repetition_penalty": 1.4,
        "no_repeat_ngram_size": 2,
        "min_new_tokens": 5,
    },
}


class Checkpoint:
    def __init__(self, folder: Path, onnx_dir: Path) -> None:
        self.torch = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.onnx = OnnxSeq2Seq(onnx_dir, threads=1)
        config = self.torch.generation_config
        self.config = config
        self.frequent: int | None = None
        self.prefix = "summarize: " if self.torch.config.model_type == "t5" else ""

    def batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer([self.prefix + t for t in texts], return_tensors="pt", padding=True)

    def special(self, eos: int | None = None) -> SpecialTokens:
        return SpecialTokens(
            self.config.decoder_start_token_id,
            (eos if eos is not None else self.config.eos_token_id,),
            self.config.pad_token_id,
        )

    def expected(self, texts: list[str], eos: int | None, **settings) -> list[list[int]]:
        batch = self.batch(texts)
        extra = {"eos_token_id": eos} if eos is not None else {}
        with torch.no_grad():
            output = self.torch.generate(
                **batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **settings, **extra
            )
        end = eos if eos is not None else self.config.eos_token_id
        rows = []
        for row in output[:, 1:].tolist():
            # transformers pads a row after its end-of-sequence token; cut there.
            rows.append(row[: row.index(end) + 1] if end in row else row)
        return rows

    def ours(self, texts: list[str], eos: int | None, settings: list[GenerationSettings]) -> list[list[int]]:
        batch = self.batch(texts)
        ids = [
            row[mask.bool()].numpy()
            for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        ]
        special = self.special(eos)
        encoded = self.onnx.encode_tokens(ids, special.pad)
        requests = [Request((special.decoder_start,), s) for s in settings]
        return [list(g.tokens) for g in generate(self.onnx, encoded, requests, special)]

    def settings(self, **overrides) -> GenerationSettings:
        fields = {
            "max_new_tokens": MAX_NEW_TOKENS,
            "forced_bos_token_id": self.config.forced_bos_token_id,
            "forced_eos_token_id": self.config.forced_eos_token_id,
        }
        return GenerationSettings(**(fields | overrides))


@pytest.fixture(scope="module", params=["t5", "bart"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    build = build_tiny_t5 if request.param == "t5" else build_tiny_bart
    folder = build(tmp_path_factory.mktemp(request.param), journal_corpus())
    onnx_dir = tmp_path_factory.mktemp(f"{request.param}-onnx")
    export_with_past(str(folder), "text2text-generation-with-past", onnx_dir)
    return Checkpoint(folder, onnx_dir)


TEXTS = journal_corpus()[:5]


def frequent_token(checkpoint: Checkpoint) -> int:
    """A token the model often produces, used as end of sequence so beams finish at different steps."""
    if checkpoint.frequent is None:
        rows = checkpoint.expected(TEXTS, None, num_beams=1)
        checkpoint.frequent = Counter(token for row in rows for token in row[1:]).most_common(1)[0][0]
    return checkpoint.frequent


def test_outputs_depend_on_the_input(checkpoint: Checkpoint) -> None:
    rows = checkpoint.expected(TEXTS, None, num_beams=1)
    assert len({tuple(row) for row in rows}) >= 4
    assert len({token for row in rows for token in row}) >= 5


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("early_eos", [False, True], ids=["model-eos", "frequent-eos"])
def test_padded_batch_matches_generate(checkpoint: Checkpoint, name: str, early_eos: bool) -> None:
    eos = frequent_token(checkpoint) if early_eos else None
    settings = SETTINGS[name]
    expected = checkpoint.expected(TEXTS, eos, **settings)
    ours = checkpoint.ours(TEXTS, eos, [checkpoint.settings(**settings)] * len(TEXTS))
    assert ours == expected
    if early_eos:
        lengths = {len(row) for row in expected}
        assert len(lengths) > 1, "sequences should end at different steps"


@pytest.mark.parametrize("name", ["greedy", "beam4"])
def test_batch_of_one_matches_generate(checkpoint: Checkpoint, name: str) -> None:
    eos = frequent_token(checkpoint)
    for text in TEXTS[:3]:
        expected = checkpoint.expected([text], eos, **SETTINGS[name])
        assert checkpoint.ours([text], eos, [checkpoint.settings(**SETTINGS[name])]) == expected


def test_mixed_settings_in_one_batch_equal_each_alone(checkpoint: Checkpoint) -> None:
    eos = frequent_token(checkpoint)
    names = list(SETTINGS)
    mixed = [checkpoint.settings(**SETTINGS[names[i % len(names)]]) for i in range(len(TEXTS))]
    together = checkpoint.ours(TEXTS, eos, mixed)
    alone = [checkpoint.ours([text], eos, [s])[0] for text, s in zip(TEXTS, mixed, strict=True)]
    assert together == alone


def test_min_and_max_new_tokens_per_row(checkpoint: Checkpoint) -> None:
    eos = frequent_token(checkpoint)
    limits = [
        checkpoint.settings(num_beams=1, max_new_tokens=n, min_new_tokens=min(n, 3)) for n in (1, 3, 7, 14, 5)
    ]
    rows = checkpoint.ours(TEXTS, eos, limits)
    for row, settings in zip(rows, limits, strict=True):
        assert settings.min_new_tokens <= len(row) <= settings.max_new_tokens
        assert eos not in row[: settings.min_new_tokens - 1]


def test_streamed_tokens_are_the_answer(checkpoint: Checkpoint) -> None:
    batch = checkpoint.batch(TEXTS)
    ids = [
        row[mask.bool()].numpy()
        for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    special = checkpoint.special(frequent_token(checkpoint))
    streamed: dict[int, list[int]] = {}
    requests = [Request((special.decoder_start,), checkpoint.settings())] * len(TEXTS)
    results = generate(
        checkpoint.onnx,
        checkpoint.onnx.encode_tokens(ids, special.pad),
        requests,
        special,
        on_token=lambda row, token: streamed.setdefault(row, []).append(token),
    )
    assert [streamed[i] for i in range(len(TEXTS))] == [list(r.tokens) for r in results]


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationSettings(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValueError, match="num_beams"):
        GenerationSettings(max_new_tokens=4, num_beams=0)


def test_beam_logprob_is_the_sequence_logprob(checkpoint: Checkpoint) -> None:
    batch = checkpoint.batch(TEXTS[:1])
    special = checkpoint.special()
    encoded = checkpoint.onnx.encode_tokens([batch["input_ids"][0].numpy()], special.pad)
    settings = checkpoint.settings(num_beams=4, length_penalty=1.0)
    (result,) = generate(checkpoint.onnx, encoded, [Request((special.decoder_start,), settings)], special)
    with torch.no_grad():
        output = checkpoint.torch.generate(
            **batch,
            max_new_tokens=MAX_NEW_TOKENS,
            num_beams=4,
            output_scores=True,
            return_dict_in_generate=True,
        )
    score = float(output.sequences_scores[0]) * len(result.tokens)
    assert np.isclose(result.logprob, score, atol=1e-3)
