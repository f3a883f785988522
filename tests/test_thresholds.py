"""samo tune-thresholds on an exported tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.emotion.thresholds import (
    ThresholdDataError,
    best_thresholds,
    f1_scores,
    load_labelled_texts,
    score_texts,
)
from samo.contracts.emotion import Thresholds
from samo_cli.app import app
from tests.conftest import LABELS, journal_corpus


@pytest.fixture(scope="module")
def model_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("repo")
    return export_emotion(EmotionExportOptions(model=str(tiny_bert), repository=repository)).model_dir


def test_f1_scores_by_hand() -> None:
    predicted = np.array([[1, 0], [1, 1], [0, 0]], dtype=np.int8)
    targets = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.int8)
    micro, macro = f1_scores(predicted, targets)
    # label 0: tp 1 fp 1 fn 0 -> 2/3; label 1: tp 1 fp 0 fn 1 -> 2/3; micro: 2*2 / (4 + 1 + 1)
    assert micro == pytest.approx(4 / 6)
    assert macro == pytest.approx(2 / 3)


def test_best_threshold_separates_scores() -> None:
    scores = np.array([[0.9, 0.2], [0.7, 0.2], [0.3, 0.2], [0.1, 0.2]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.int8)
    chosen = best_thresholds(scores, targets, np.array([0.5, 0.5]))
    assert 0.3 < chosen[0] <= 0.7
    assert chosen[1] == 0.5  # no positives: unchanged


def test_tuning_writes_thresholds_that_do_not_lower_f1(model_dir: Path, tmp_path: Path) -> None:
    texts = journal_corpus()[:120]
    scores = score_texts(model_dir, texts)
    # Labels from the model's own ranking, so a good threshold exists for each label used.
    records = [{"text": t, "labels": [LABELS[int(np.argmax(s))]]} for t, s in zip(texts, scores, strict=True)]
    data = tmp_path / "validation.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records))
    result = CliRunner().invoke(app, ["tune-thresholds", "--model-dir", str(model_dir), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "before: micro F1" in result.output and "after:  micro F1" in result.output
    tuned = Thresholds.read(model_dir)
    assert tuned.tuned_on == "validation.jsonl"
    assert tuned.micro_f1 is not None and tuned.micro_f1 > 0
    assert set(tuned.thresholds.values()) != {0.5}


def test_csv_with_indices_and_names(tmp_path: Path) -> None:
    data = tmp_path / "v.csv"
    data.write_text('text,labels\n"I am glad",joy\n"Mixed","17;gratitude"\n"Nothing",\n')
    labelled = load_labelled_texts(data, LABELS)
    assert labelled.texts == ("I am glad", "Mixed", "Nothing")
    assert labelled.targets[0, LABELS.index("joy")] == 1
    assert labelled.targets[1, 17] == 1 and labelled.targets[1, LABELS.index("gratitude")] == 1
    assert labelled.targets[2].sum() == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.jsonl", '{"text": "hi", "labels": ["happiness"]}', "v.jsonl line 1: unknown label 'happiness'"),
        ("v.jsonl", '{"labels": ["joy"]}', "v.jsonl line 1: `text` is missing or empty"),
        ("v.jsonl", "{not json", "v.jsonl line 1: not JSON"),
        ("v.csv", "sentence,labels\nhi,joy\n", "v.csv: needs a header with `text` and `labels` columns"),
        ("v.csv", "text,labels\nhi,99\n", "v.csv line 2: label index 99 is outside 0..27"),
        ("v.txt", "hi", "v.txt: use .csv, .tsv or .jsonl"),
    ],
)
def test_bad_validation_files_are_explained(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ThresholdDataError, match=message):
        load_labelled_texts(tmp_path / name, LABELS)
