"""Contracts and config.pbtxt generation: pure unit tests with exact messages and golden files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

from exporters.emotion.export import EmotionExportOptions, serving_options
from exporters.summarizer.export import SummarizerExportOptions
from exporters.summarizer.export import serving_options as summarizer_serving_options
from exporters.whisper.serving import whisper_serving_options
from samo.contracts.emotion import EmotionContract, EmotionModelCard, Thresholds, to_probabilities
from samo.contracts.summarizer import SummarizerContract, SummarizerModelCard
from samo.contracts.tensors import DataType, ModelContract, TensorSpec
from samo.contracts.whisper import AUDIO, OPTIONS, SAMPLE_RATE, WhisperContract
from samo.generation.whisper import read_window
from samo.triton.model_config import (
    WARMUP_DIR,
    DynamicBatching,
    QueuePolicy,
    ServingOptions,
    build_model_config,
    render_model_config,
    write_warmup_files,
)

GOLDEN = Path(__file__).parent / "golden"
LABELS = tuple(f"label_{i}" for i in range(28))


def card(target: str) -> EmotionModelCard:
    return EmotionModelCard(
        kind="fine-tuned",
        source="tests",
        labels=LABELS,
        activation="sigmoid",
        max_length=128,
        token_type_ids=True,
        target=target,  # type: ignore[arg-type]
    )


def rendered(target: str) -> str:
    model_card = card(target)
    options = serving_options(model_card, EmotionExportOptions(target=target))  # type: ignore[arg-type]
    return render_model_config(build_model_config("emotion", model_card.contract.model, options))


@pytest.mark.parametrize("target", ["cpu", "gpu", "gpu-torch"])
def test_config_matches_golden_file(target: str) -> None:
    golden = GOLDEN / f"emotion_{target}.pbtxt"
    if os.environ.get("SAMO_UPDATE_GOLDEN"):
        golden.write_text(rendered(target))
    assert rendered(target) == golden.read_text(), (
        "regenerate with SAMO_UPDATE_GOLDEN=1 if the change is deliberate"
    )


@pytest.mark.parametrize("target", ["cpu", "gpu", "gpu-torch"])
def test_response_cache_is_opt_in(target: str) -> None:
    model_card = card(target)
    on = serving_options(model_card, EmotionExportOptions(target=target, response_cache=True))  # type: ignore[arg-type]
    config = render_model_config(build_model_config("emotion", model_card.contract.model, on))
    assert "response_cache {\n  enable: true\n}" in config
    assert "response_cache" not in rendered(target)


def test_cpu_config_batches_ragged_inputs_and_gpu_config_does_not() -> None:
    cpu, gpu = card("cpu").contract.model, card("gpu").contract.model
    assert all(t.ragged for t in cpu.inputs)
    assert not any(t.ragged for t in gpu.inputs)
    assert cpu.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert cpu.output("logits").dims == (28,)


def test_contract_without_token_type_ids() -> None:
    contract = EmotionContract(num_labels=5, token_type_ids=False).model
    assert contract.input_names == ("input_ids", "attention_mask")
    with pytest.raises(
        KeyError, match="no input tensor `token_type_ids`; the contract has: input_ids, attention_mask"
    ):
        contract.input("token_type_ids")


def test_dynamic_axes_name_the_batch_and_dynamic_dims() -> None:
    spec = TensorSpec("input_ids", DataType.INT64, (-1,), ("batch_size", "sequence_length"))
    assert spec.dynamic_axes == {0: "batch_size", 1: "sequence_length"}
    logits = TensorSpec("logits", DataType.FP32, (28,), ("batch_size", "num_labels"))
    assert logits.dynamic_axes == {0: "batch_size"}


def test_tensor_spec_needs_a_name_per_axis() -> None:
    with pytest.raises(
        ValueError, match=r"tensor `x`: `axes` must name the batch axis and every dim \(2 names\), got 1"
    ):
        TensorSpec("x", DataType.FP32, (-1,), ("batch_size",))


def test_string_dtype_is_spelled_type_string_in_configs() -> None:
    assert DataType.BYTES.config_name == "TYPE_STRING"
    assert DataType.INT64.config_name == "TYPE_INT64"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "`max_batch_size` must be at least 1, got 0"),
        ({"max_batch_size": 8, "instance_count": 0}, "`instance_count` must be at least 1, got 0"),
        (
            {"max_batch_size": 8, "batching": DynamicBatching(preferred_batch_sizes=(4, 16))},
            r"`preferred_batch_sizes` \[16\] must lie in 1..8 \(max_batch_size\)",
        ),
        ({"max_batch_size": 8, "tensorrt_fp16": True}, "`tensorrt_fp16` needs `instance_kind` KIND_GPU"),
    ],
)
def test_serving_options_reject_impossible_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServingOptions(backend="python", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_queue_size": 0}, "`max_queue_size` must be at least 1, got 0"),
        ({"timeout_us": -1}, r"`timeout_us` must be 0 \(none\) or more, got -1"),
    ],
)
def test_queue_policy_rejects_impossible_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueuePolicy(**kwargs)


def test_probabilities_from_logits() -> None:
    logits = np.array([[0.0, 2.0, -2.0]])
    np.testing.assert_allclose(to_probabilities(logits, "sigmoid"), [[0.5, 0.880797, 0.119203]], atol=1e-6)
    np.testing.assert_allclose(to_probabilities(logits, "softmax").sum(), 1.0)
    assert to_probabilities(logits, "none") is logits


def test_thresholds_must_cover_every_label() -> None:
    thresholds = Thresholds(thresholds={"a": 0.3})
    assert thresholds.for_labels(("a",)) == (0.3,)
    with pytest.raises(ValueError, match=r"thresholds.json has no threshold for: b, c"):
        thresholds.for_labels(("a", "b", "c"))


def _summarizer_card() -> SummarizerModelCard:
    return SummarizerModelCard(
        architecture="t5", source="tests", max_input_tokens=512, decoder_start_token_id=0,
        eos_token_ids=(1,), pad_token_id=0,
    )  # fmt: skip


def _every_served_config() -> dict[str, tuple[ModelContract, ServingOptions]]:
    """What each exporter family writes: encoders on each target, Whisper, summarizers (and streams)."""
    configs = {
        f"emotion_{target}": (card(target).contract.model, serving_options(card(target), EmotionExportOptions(target=target)))  # type: ignore[arg-type]
        for target in ("cpu", "gpu", "gpu-torch")
    }  # fmt: skip
    configs["whisper"] = (WhisperContract().model, whisper_serving_options("cpu", {}))
    summarizer = SummarizerExportOptions(model="unused")
    for stream_of in (None, "summarizer"):
        options = summarizer_serving_options(_summarizer_card(), summarizer, stream_of=stream_of)
        configs[f"summarizer_stream_{stream_of is not None}"] = (SummarizerContract().model, options)
    return configs


@pytest.mark.parametrize("family", sorted(_every_served_config()))
def test_every_served_model_refuses_work_past_its_queue_policy(family: str) -> None:
    contract, options = _every_served_config()[family]
    policy = build_model_config(family, contract, options).dynamic_batching.default_queue_policy
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert policy.allow_timeout_override  # the gateway shortens it to each request's deadline
    assert 1 <= policy.max_queue_size <= 4096
    # No default timeout: with one, this Triton's batcher stalls ~500 ms at a time (QueuePolicy's docstring).
    assert policy.default_timeout_microseconds == 0


def test_whisper_warms_up_greedily_from_an_options_file(tmp_path: Path) -> None:
    """Beam search on the warm-up's silence makes up ~200 tokens (seconds of CPU at every load): the
    warm-up's options come from a file, in the BYTES layout Triton reads, and say greedy."""
    options = whisper_serving_options("cpu", {})
    config = build_model_config("whisper", WhisperContract().model, options)
    (sample,) = config.model_warmup
    assert sample.inputs[AUDIO].zero_data and sample.inputs[AUDIO].dims == [SAMPLE_RATE]
    assert sample.inputs[OPTIONS].input_data_file == "zeros.options"
    write_warmup_files(tmp_path, options)
    raw = (tmp_path / WARMUP_DIR / sample.inputs[OPTIONS].input_data_file).read_bytes()
    length = int.from_bytes(raw[:4], "little")
    assert length == len(raw) - 4
    audio = np.zeros((1, SAMPLE_RATE), dtype=np.float32)
    _, decode = read_window(audio, np.array([[raw[4:]]], dtype=np.object_))
    assert decode.beam_size == 1


@pytest.mark.parametrize("target", ["cpu", "gpu", "gpu-torch"])
def test_instances_and_threads_reach_the_config(target: str) -> None:
    options = EmotionExportOptions(target=target, instance_count=3, intra_op_threads=1)  # type: ignore[arg-type]
    model_card = card(target)
    config = build_model_config("emotion", model_card.contract.model, serving_options(model_card, options))
    assert [group.count for group in config.instance_group] == [3]
    if target != "gpu":  # NVIDIA's ONNX Runtime backend takes no thread parameter from us
        assert config.parameters["intra_op_threads"].string_value == "1"


def test_export_commands_take_instances_and_threads() -> None:
    from typer.testing import CliRunner

    from samo_cli.export import app

    for command in ("emotion", "embedder"):
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--instances" in shown and "--threads" in shown
