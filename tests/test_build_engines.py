"""TensorRT engines built on purpose: the shapes the gateway can send, the profile and warm-up that cover
them, and `samo build-engines` sending each of them to a real tritonserver (CPU models here: the same
shapes, counted by Triton's own statistics)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from exporters.emotion.export import EmotionExportOptions, export_emotion, serving_options
from samo.contracts.emotion import EmotionModelCard
from samo.text_encoding import TokenEncoder
from samo.triton.encoder_shapes import EncoderShapes
from samo.triton.local_server import LocalTriton
from samo.triton.model_config import build_model_config
from samo_cli.app import app

MODEL = "tiny_bert"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    repository = tmp_path_factory.mktemp("engines-repository")
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name=MODEL, repository=repository))
    return repository


@pytest.fixture(scope="module")
def triton(repository: Path, local_triton) -> Iterator[LocalTriton]:
    with local_triton(repository) as server:
        yield server


def _executions_by_batch(client: httpclient.InferenceServerClient) -> dict[int, int]:
    (stats,) = client.get_inference_statistics(MODEL)["model_stats"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


# --- the shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_length", "lengths"),
    [(64, (16, 32, 48, 64)), (40, (16, 32, 40)), (8, (8,)), (512, tuple(range(16, 513, 16)))],
)
def test_sequence_lengths_are_the_gateways_padding_buckets(max_length: int, lengths: tuple[int, ...]) -> None:
    assert EncoderShapes(max_batch_size=64, max_length=max_length).sequence_lengths == lengths


def test_batch_buckets_profile_and_warmup_corners() -> None:
    shapes = EncoderShapes(max_batch_size=64, max_length=512)
    assert shapes.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 16), (32, 128), (64, 512))
    assert len(shapes.corners) == 9 and len(shapes.every_bucket) == 7 * 32
    assert (
        shapes.profile(["input_ids", "attention_mask"], shapes.max)
        == "input_ids:64x512,attention_mask:64x512"
    )
    assert EncoderShapes(max_batch_size=6, max_length=20).batch_sizes == (1, 2, 4, 6)


def test_gateway_padding_never_leaves_the_profile(repository: Path) -> None:
    """The gateway's own encoder (non-ragged, as for `--target gpu`) pads only to lengths in the profile."""
    encoder = TokenEncoder.load(
        repository / MODEL, max_length=40, pad_token_id=0, token_type_ids=True, ragged=False
    )
    shapes = EncoderShapes(max_batch_size=64, max_length=40)
    words = ["today", "I", "walked", "by", "the", "river", "and", "felt", "calm", "again"]
    widths = set()
    for n in range(1, 80, 3):
        batch = [" ".join(words[i % len(words)] for i in range(n)), "ok"]
        widths.add(encoder.encode(batch).inputs["input_ids"].shape[1])
    assert widths <= set(shapes.sequence_lengths), (
        f"widths {sorted(widths)} outside {shapes.sequence_lengths}"
    )
    assert max(widths) == shapes.max[1], "texts over the limit are truncated to the profile's max length"


def _gpu_config(max_length: int) -> dict:
    card = EmotionModelCard(
        kind="fine-tuned",
        source="tests",
        labels=tuple(f"label_{i}" for i in range(28)),
        activation="sigmoid",
        max_length=max_length,
        token_type_ids=True,
        target="gpu",
    )
    config = build_model_config(
        "emotion", card.contract.model, serving_options(card, EmotionExportOptions(target="gpu"))
    )
    (tensorrt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    return {"parameters": dict(tensorrt.parameters), "warmup": list(config.model_warmup)}


def _profile(value: str) -> dict[str, tuple[int, int]]:
    shapes = {}
    for entry in value.split(","):
        name, dims = entry.split(":")
        batch, length = dims.split("x")
        shapes[name] = (int(batch), int(length))
    return shapes


def test_gpu_config_profile_covers_every_shape_and_warms_its_corners() -> None:
    config = _gpu_config(max_length=512)
    parameters = config["parameters"]
    shapes = EncoderShapes(max_batch_size=64, max_length=512)
    low, opt, high = (_profile(parameters[f"trt_profile_{k}_shapes"]) for k in ("min", "opt", "max"))
    assert set(low) == set(high) == {"input_ids", "attention_mask", "token_type_ids"}
    for batch, length in shapes.every_bucket:
        for name in low:
            assert low[name] <= (batch, length) and (batch, length) <= high[name]
            assert low[name][1] <= length <= high[name][1] and low[name][0] <= batch <= high[name][0]
    assert opt["input_ids"] == (32, 128)
    assert parameters["trt_engine_cache_enable"] == "true"
    assert parameters["trt_engine_cache_path"] == "/cache/tensorrt"
    warmed = {(w.batch_size, w.inputs["input_ids"].dims[0]) for w in config["warmup"]}
    assert warmed == set(shapes.corners) and len(warmed) == 9, "warm-up must run min/opt/max x min/opt/max"


# --- samo build-engines against a real tritonserver ----------------------------------------------------


def test_build_engines_sends_every_bucket_once(repository: Path, triton: LocalTriton) -> None:
    card = EmotionModelCard.read(repository / MODEL)
    shapes = EncoderShapes(max_batch_size=card.max_batch_size, max_length=card.max_length)
    client = httpclient.InferenceServerClient(triton.http_url)
    before = _executions_by_batch(client)

    result = CliRunner().invoke(
        app, ["build-engines", "--repository", str(repository), "--url", triton.http_url]
    )
    assert result.exit_code == 0, result.output
    assert f"{MODEL}: {len(shapes.every_bucket)} shapes" in result.output

    # Requests go one at a time, so each is one execution of its batch size: every batch bucket ran once
    # per sequence length, plus the verification's second pass over the smallest and largest shapes.
    expected = {
        batch: len(shapes.sequence_lengths) + (batch == shapes.min[0]) + (batch == shapes.max[0])
        for batch in shapes.batch_sizes
    }
    # Triton records an execution's statistics after sending its answer: read until all are counted.
    deadline = time.monotonic() + 10
    while True:
        after = _executions_by_batch(client)
        counted = sum(after.values()) - sum(before.values())
        if counted >= sum(expected.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    client.close()
    for batch in shapes.batch_sizes:
        assert after.get(batch, 0) - before.get(batch, 0) == expected[batch], f"batch {batch}"
    assert set(after) - set(before) <= set(shapes.batch_sizes)


def test_build_engines_starts_its_own_triton(repository: Path, triton_install) -> None:
    result = CliRunner().invoke(app, ["build-engines", "--repository", str(repository)])
    assert result.exit_code == 0, result.output
    assert (
        f"{MODEL}: every shape answered; engines in no TensorRT cache (CPU model): 0 file(s)" in result.output
    )


def test_build_engines_refuses_a_repository_without_text_encoders(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["build-engines", "--repository", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds no text encoder" in result.output
