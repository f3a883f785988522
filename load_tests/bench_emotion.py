"""`samo bench emotion`: the naive service, ONNX Runtime in-process and this stack, in one run.

(a) FastAPI + PyTorch (transformers pipeline), one forward per request, in its own process;
(b) ONNX Runtime in-process on the very graph Triton serves, pre-tokenized: batch 1 latency and
    batch 32 throughput in arrival order (the compute limit);
(c) the gateway + Triton, as `make serve` runs them.
(a) and (c) are driven by the light load generator (load_tests/loadgen.py), one text per request.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.emotion.zero_shot import load_prototype_phrases, minilm_path
from exporters.encoder_serving import MODEL_VERSION, ONNX_FILE
from exporters.onnx_tools import cpu_session
from gateway.emotions.model import EmotionModel
from load_tests.loadgen import format_table, run_load_sync
from load_tests.processes import free_port, gateway_stack, server_process
from load_tests.texts import journal_texts
from samo.contracts.emotion import LOGITS

logger = logging.getLogger(__name__)

NAIVE = "(a) FastAPI + PyTorch"
IN_PROCESS = "(b) ONNX Runtime in-process"
STACK = "(c) gateway + Triton"
COLUMNS = ("model", "system", "load", "throughput_per_s", "p50_ms", "p99_ms", "errors")
IN_PROCESS_BATCH = 32


@dataclass(frozen=True)
class BenchOptions:
    duration_s: float = 8.0
    concurrency: tuple[int, ...] = (1, 8, 32)
    models: tuple[str, ...] = ("bert-base", "minilm-zero-shot")
    output_dir: Path = Path("load_tests/results")
    warmup_s: float = 2.0
    quantize: Literal["none", "int8"] = "none"


@dataclass(frozen=True)
class PreparedModel:
    name: str
    repository: Path
    naive_model: str

    @property
    def model_dir(self) -> Path:
        return self.repository / "emotion"


def _bert_base_checkpoint(folder: Path) -> Path:
    """BERT-base-sized (12 layers, hidden 768) classifier with random weights and the uncased vocabulary."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    labels = list(load_prototype_phrases())
    torch.manual_seed(0)
    config = BertConfig(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification",
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    return folder


def prepare(name: str, workdir: Path, quantize: Literal["none", "int8"]) -> PreparedModel:
    repository = workdir / name / "repository"
    if name == "bert-base":
        checkpoint = _bert_base_checkpoint(workdir / name / "checkpoint")
        export_emotion(EmotionExportOptions(model=str(checkpoint), repository=repository, quantize=quantize))
        return PreparedModel(name, repository, str(checkpoint))
    if name == "minilm-zero-shot":
        export_emotion(EmotionExportOptions(repository=repository, quantize=quantize))
        return PreparedModel(name, repository, "zero-shot")
    raise ValueError(f"unknown benchmark model {name!r}; use bert-base or minilm-zero-shot")


class LoadShape(Protocol):
    """How a closed-loop run is shaped: `BenchOptions` here, the GPU check's options too."""

    concurrency: tuple[int, ...]
    duration_s: float
    warmup_s: float


def load_rows(model: str, system: str, url: str, texts: list[str], shape: LoadShape) -> list[dict]:
    """One closed-loop run per concurrency against `/v1/emotions`, one text per request, as table rows."""
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    rows = []
    for clients in shape.concurrency:
        result = run_load_sync(
            url, bodies, concurrency=clients, duration_s=shape.duration_s, warmup_s=shape.warmup_s
        )
        rows.append(
            {
                "model": model,
                "system": system,
                "load": f"c={clients}",
                "throughput_per_s": result.throughput,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "errors": result.errors,
            }
        )
        logger.info(
            "%s %s c=%d: %.1f req/s, %d errors", model, system, clients, result.throughput, result.errors
        )
    return rows


def _load_rows(model: str, system: str, url: str, texts: list[str], options: BenchOptions) -> list[dict]:
    """`load_rows`, refusing a run in which a point answered nothing (the benchmark compares systems)."""
    rows = load_rows(model, system, url, texts, options)
    for row in rows:
        if not row["throughput_per_s"]:
            raise RuntimeError(f"{system} answered no request successfully ({row['errors']} errors)")
    return rows


def measure_naive(model: PreparedModel, texts: list[str], options: BenchOptions) -> list[dict]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "load_tests.naive_service",
        "--model",
        model.naive_model,
        "--port",
        str(port),
    ]
    with server_process(command, ready_url=f"http://127.0.0.1:{port}/health"):
        return _load_rows(model.name, NAIVE, f"http://127.0.0.1:{port}/v1/emotions", texts, options)


def measure_in_process(model: PreparedModel, texts: list[str], options: BenchOptions) -> list[dict]:
    served = EmotionModel.load(model.model_dir)
    session = cpu_session(model.model_dir / MODEL_VERSION / ONNX_FILE)
    rows = []
    for batch in (1, IN_PROCESS_BATCH):
        feeds = [served.encode(texts[i : i + batch]).inputs for i in range(0, len(texts) - batch + 1, batch)]
        for feed in feeds[:3]:
            session.run([LOGITS], feed)
        latencies, processed = [], 0
        start = time.perf_counter()
        while time.perf_counter() - start < options.duration_s:
            feed = feeds[len(latencies) % len(feeds)]
            began = time.perf_counter()
            session.run([LOGITS], feed)
            latencies.append((time.perf_counter() - began) * 1000)
            processed += batch
        rows.append(
            {
                "model": model.name,
                "system": IN_PROCESS,
                "load": f"batch {batch}",
                "throughput_per_s": processed / (time.perf_counter() - start),
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "errors": 0,
            }
        )
    return rows


def measure_stack(model: PreparedModel, texts: list[str], options: BenchOptions) -> list[dict]:
    with gateway_stack(model.repository) as stack:
        return _load_rows(model.name, STACK, f"{stack.gateway_url}/v1/emotions", texts, options)


def _row(rows: list[dict], system: str, load: str) -> dict | None:
    return next((r for r in rows if r["system"] == system and r["load"] == load), None)


def summarize(model: str, rows: list[dict], concurrency: tuple[int, ...]) -> list[str]:
    top = f"c={max(concurrency)}"
    naive, stack = _row(rows, NAIVE, top), _row(rows, STACK, top)
    limit, single = _row(rows, IN_PROCESS, f"batch {IN_PROCESS_BATCH}"), _row(rows, IN_PROCESS, "batch 1")
    stack_one = _row(rows, STACK, "c=1")
    lines = []
    if naive and stack and limit:
        lines.append(
            f"- {model}: (c) at {top} = {stack['throughput_per_s'] / naive['throughput_per_s']:.1f}x (a) "
            f"(target 5x), {stack['throughput_per_s'] / limit['throughput_per_s']:.2f}x (b) batch "
            f"{IN_PROCESS_BATCH} (target 0.8x)"
        )
    if single and stack_one:
        gap = stack_one["p50_ms"] - single["p50_ms"]
        lines.append(
            f"- {model}: p50 at c=1: (c) {stack_one['p50_ms']:.1f} ms vs (b) batch 1 {single['p50_ms']:.1f} ms, +{gap:.1f} ms (target +3 ms)"
        )
    return lines


def run_benchmark(options: BenchOptions) -> str:
    texts = journal_texts()
    rows: list[dict] = []
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="samo-bench-") as workdir:
        for name in options.models:
            model = prepare(name, Path(workdir), options.quantize)
            model_rows = (
                measure_naive(model, texts, options)
                + measure_in_process(model, texts, options)
                + measure_stack(model, texts, options)
            )
            rows += model_rows
            summary += summarize(name, model_rows, options.concurrency)
    header = (
        f"# Emotion benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, quantization {options.quantize}, "
        f"{options.duration_s:.0f} s per point after {options.warmup_s:.0f} s warm-up, one text per request, "
        f"{len(texts)} journal texts of 1 to 3 sentences.\n\n"
    )
    report = header + format_table(rows, COLUMNS) + "\n" + "\n".join(summary) + "\n"
    options.output_dir.mkdir(parents=True, exist_ok=True)
    (options.output_dir / f"emotion-{options.quantize}.md").write_text(report)
    return report
