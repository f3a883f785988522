"""`samo tune-thresholds`: per-label thresholds that maximize F1 on a labelled validation set.

Scores come from the exported graph in the model folder with the gateway's own tokenization, so the
thresholds fit exactly what Triton serves.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.encoder_serving import MODEL_VERSION, ONNX_FILE
from exporters.onnx_tools import cpu_session
from samo.contracts.emotion import LOGITS, EmotionModelCard, Thresholds, to_probabilities
from samo.text_encoding import TokenEncoder

CANDIDATES = np.round(np.arange(0.02, 0.99, 0.01), 2)
BATCH = 32


class ThresholdDataError(ValueError):
    """The validation file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class LabelledTexts:
    texts: tuple[str, ...]
    targets: np.ndarray  # [texts, labels] of 0/1


def _label_indices(raw: object, labels: Sequence[str], where: str) -> list[int]:
    if isinstance(raw, str):
        items: list[object] = [p for p in re.split(r"[,;|]", raw) if p.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ThresholdDataError(f"{where}: `labels` must be a list or a delimited string")
    indices = []
    for item in items:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < len(labels):
                raise ThresholdDataError(f"{where}: label index {index} is outside 0..{len(labels) - 1}")
        elif text in labels:
            index = labels.index(text)
        else:
            raise ThresholdDataError(f"{where}: unknown label {text!r}")
        indices.append(index)
    return indices


def load_labelled_texts(path: Path, labels: Sequence[str]) -> LabelledTexts:
    if not path.is_file():
        raise ThresholdDataError(f"{path} does not exist")
    rows: list[tuple[str, object, str]] = []
    if path.suffix in {".jsonl", ".json"}:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ThresholdDataError(f"{path.name} line {number}: not JSON ({exc.msg})") from None
            rows.append((record.get("text"), record.get("labels"), f"{path.name} line {number}"))
    elif path.suffix in {".csv", ".tsv"}:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
            if not reader.fieldnames or not {"text", "labels"} <= set(reader.fieldnames):
                raise ThresholdDataError(f"{path.name}: needs a header with `text` and `labels` columns")
            for number, record in enumerate(reader, start=2):
                rows.append((record["text"], record["labels"], f"{path.name} line {number}"))
    else:
        raise ThresholdDataError(f"{path.name}: use .csv, .tsv or .jsonl")
    if not rows:
        raise ThresholdDataError(f"{path.name} has no examples")
    targets = np.zeros((len(rows), len(labels)), dtype=np.int8)
    texts = []
    for row, (text, raw_labels, where) in enumerate(rows):
        if not isinstance(text, str) or not text.strip():
            raise ThresholdDataError(f"{where}: `text` is missing or empty")
        texts.append(text)
        targets[row, _label_indices(raw_labels if raw_labels is not None else [], labels, where)] = 1
    return LabelledTexts(texts=tuple(texts), targets=targets)


def f1_scores(predicted: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 over labels (macro over labels that have positives or predictions)."""
    tp = (predicted & targets).sum(0).astype(float)
    fp = (predicted & (1 - targets)).sum(0).astype(float)
    fn = ((1 - predicted) & targets).sum(0).astype(float)
    denominator = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = 2 * tp.sum() / denominator if denominator else 0.0
    per_label = 2 * tp + fp + fn
    present = per_label > 0
    macro = float(np.mean(2 * tp[present] / per_label[present])) if present.any() else 0.0
    return float(micro), macro


def best_thresholds(scores: np.ndarray, targets: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per label, the candidate with the highest F1; labels without positives keep their threshold."""
    chosen = current.copy()
    for label in range(scores.shape[1]):
        positives = targets[:, label].astype(bool)
        if not positives.any():
            continue
        predicted = scores[:, label][:, None] >= CANDIDATES[None, :]
        tp = (predicted & positives[:, None]).sum(0)
        f1 = 2 * tp / (predicted.sum(0) + positives.sum())
        chosen[label] = CANDIDATES[int(np.argmax(f1))]
    return chosen


@dataclass(frozen=True)
class TuningReport:
    examples: int
    before: tuple[float, float]
    after: tuple[float, float]
    thresholds: Thresholds

    def summary(self) -> str:
        return (
            f"tuned on {self.examples} examples\n"
            f"  before: micro F1 {self.before[0]:.4f}, macro F1 {self.before[1]:.4f}\n"
            f"  after:  micro F1 {self.after[0]:.4f}, macro F1 {self.after[1]:.4f}"
        )


def score_texts(model_dir: Path, texts: Sequence[str]) -> np.ndarray:
    card = EmotionModelCard.read(model_dir)
    encoder = TokenEncoder.for_card(model_dir, card)
    session = cpu_session(model_dir / MODEL_VERSION / ONNX_FILE)
    batches = []
    for start in range(0, len(texts), BATCH):
        encoded = encoder.encode(texts[start : start + BATCH])
        batches.append(session.run([LOGITS], encoded.inputs)[0])
    return to_probabilities(np.concatenate(batches).astype(np.float64), card.activation)


def tune_thresholds(model_dir: Path, data: Path) -> TuningReport:
    card = EmotionModelCard.read(model_dir)
    labelled = load_labelled_texts(data, card.labels)
    scores = score_texts(model_dir, labelled.texts)
    current = np.asarray(Thresholds.read(model_dir).for_labels(card.labels), dtype=np.float64)
    before = f1_scores((scores >= current).astype(np.int8), labelled.targets)
    tuned = best_thresholds(scores, labelled.targets, current)
    after = f1_scores((scores >= tuned).astype(np.int8), labelled.targets)
    thresholds = Thresholds(
        thresholds={label: float(t) for label, t in zip(card.labels, tuned, strict=True)},
        tuned_on=data.name,
        micro_f1=round(after[0], 4),
        macro_f1=round(after[1], 4),
    )
    thresholds.write(model_dir)
    return TuningReport(examples=len(labelled.texts), before=before, after=after, thresholds=thresholds)
