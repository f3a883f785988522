"""Exporter on tiny random checkpoints built in the test: parity, folder layout, flags."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from transformers import AutoTokenizer
from typer.testing import CliRunner

from exporters.emotion.export import (
    EmotionExportOptions,
    export_emotion,
    serving_options,
    validation_batches,
)
from exporters.onnx_tools import ExportError, ValidationError, cpu_session, validate_against_torch
from samo.contracts.emotion import EmotionModelCard, Thresholds
from samo.triton.model_config import build_model_config, read_model_config
from samo_cli.app import app
from tests.conftest import LABELS


@pytest.fixture(scope="module")
def bert_export(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_emotion(
        EmotionExportOptions(model=str(tiny_bert), repository=tmp_path_factory.mktemp("repo"))
    )


def test_export_writes_a_complete_model_folder(bert_export) -> None:
    model_dir = bert_export.model_dir
    for relative in (
        "config.pbtxt",
        "1/model.onnx",
        "1/model.py",
        "samo.json",
        "labels.txt",
        "thresholds.json",
    ):
        assert (model_dir / relative).is_file(), relative
    assert (model_dir / "tokenizer" / "tokenizer.json").is_file()
    card = EmotionModelCard.read(model_dir)
    assert card.kind == "fine-tuned"
    assert card.labels == LABELS
    assert card.activation == "sigmoid"  # problem_type multi_label_classification
    assert card.max_length == 64
    assert card.token_type_ids
    assert (model_dir / "labels.txt").read_text().split() == list(LABELS)
    assert set(Thresholds.read(model_dir).thresholds.values()) == {0.5}


def test_generated_config_is_what_the_contract_gives(bert_export) -> None:
    card = bert_export.card
    expected = build_model_config(
        "emotion", card.contract.model, serving_options(card, EmotionExportOptions())
    )
    assert read_model_config(bert_export.model_dir) == expected


def test_parity_with_pytorch_is_stated_and_within_tolerance(bert_export) -> None:
    assert bert_export.parity.cases == 5
    assert bert_export.parity.max_abs_diff <= 1e-4
    assert "Attention" in bert_export.fused_ops  # ORT's transformer fusion ran
    assert bert_export.batch_dependence < 1e-5  # fp32: a text's scores do not depend on its batch


def test_validation_batches_cover_sizes_lengths_and_truncation(tiny_bert: Path) -> None:
    card = EmotionModelCard(
        kind="fine-tuned", source="t", labels=LABELS, activation="sigmoid", max_length=64, token_type_ids=True
    )
    batches = validation_batches(AutoTokenizer.from_pretrained(tiny_bert), card)
    shapes = [b["input_ids"].shape for b in batches]
    assert {s[0] for s in shapes} >= {1, 3, 16}
    assert max(s[1] for s in shapes) == 64  # truncated at the model's limit
    assert len({s[1] for s in shapes}) >= 4


def test_validation_fails_loudly_beyond_tolerance(bert_export, tiny_bert: Path) -> None:
    class Shifted(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return torch.zeros(input_ids.shape[0], 28) + 0.01

    session = cpu_session(bert_export.model_dir / "1" / "model.onnx")
    batches = validation_batches(AutoTokenizer.from_pretrained(tiny_bert), bert_export.card)
    with pytest.raises(
        ValidationError, match=r"`logits` differs from PyTorch by .* > atol 1e-04 on a batch of shape"
    ):
        validate_against_torch(Shifted(), session, batches, "logits", atol=1e-4)


def test_distilbert_int8_has_no_token_type_ids_and_reports_accuracy(
    tiny_distilbert: Path, tmp_path: Path
) -> None:
    report = export_emotion(
        EmotionExportOptions(model=str(tiny_distilbert), quantize="int8", repository=tmp_path, name="distil")
    )
    assert report.card.contract.model.input_names == ("input_ids", "attention_mask")
    assert report.accuracy is not None
    # Random weights drawn wide quantize badly; what matters is that the change is measured and shown.
    assert 0 < report.accuracy.max_abs_diff <= 1
    assert 0 < report.accuracy.top1_agreement <= 1
    assert "int8 vs exported fp32" in report.summary()
    graph = onnx.load(str(tmp_path / "distil" / "1" / "model.onnx")).graph
    assert any(node.op_type.startswith(("MatMulInteger", "DynamicQuantize")) for node in graph.node)


def test_gpu_target_writes_an_onnxruntime_tensorrt_model(tiny_bert: Path, tmp_path: Path) -> None:
    report = export_emotion(EmotionExportOptions(model=str(tiny_bert), target="gpu", repository=tmp_path))
    config = read_model_config(report.model_dir)
    assert config.backend == "onnxruntime"
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert not any(i.allow_ragged_batch for i in config.input)
    assert not (report.model_dir / "1" / "model.py").exists()
    # TensorRT optimizes the plain graph itself: no ORT CPU fusions in it.
    assert report.fused_ops == {}


def test_impossible_flag_combination_is_refused_with_the_fix() -> None:
    with pytest.raises(ExportError, match=r"`--quantize int8` is for `--target cpu`.*use `--quantize fp16`"):
        export_emotion(EmotionExportOptions(model="unused", target="gpu", quantize="int8"))


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="cannot load a sequence-classification checkpoint from"):
        export_emotion(EmotionExportOptions(model=str(tmp_path / "nowhere"), repository=tmp_path))


def test_cli_rejects_unknown_choices() -> None:
    result = CliRunner().invoke(app, ["export", "emotion", "--quantize", "int4"])
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())
    assert (
        "Invalid value for '--quantize': Value error, 'int4' is not one of 'none', 'int8', 'fp16'." in message
    )


def test_cli_exports_a_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "export",
            "emotion",
            "--model",
            str(tiny_bert),
            "--name",
            "cli_model",
            "--repository",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "parity fp32 vs PyTorch: 5 batches" in result.output
    assert (tmp_path / "cli_model" / "config.pbtxt").is_file()
