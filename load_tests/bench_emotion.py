"""`samo bench emotion`: naive services, the in-process compute limit and this stack, in one run.

(a0) FastAPI + PyTorch as such services ship (default threads in every pool thread), fp32: untuned;
(a)  the same tuned the way a competent user would: PyTorch threads = usable cores, one forward at a
     time; with `--quantize int8` also PyTorch's dynamic int8, so int8 meets int8;
(b)  ONNX Runtime in-process on the very graph Triton serves, pre-tokenized, the backend's session
     options: batch 1 latency; batches of 32 in arrival order; and the compute limit, batches
     sorted by length into sub-batches padded only to their own longest row, exactly as the Triton
     model does (`samo/triton/backends/encoder.py`): of 32 texts (what one dynamic batch holds at
     c=32; under the 32-row, 4096-token sub-batch limits that is one sub-batch, so it equals arrival
     order) and of 256 texts (the best in-process batching: rows of similar length share sub-batches).
     With `--quantize int8`, the fp32 graph's limits too, and the int8 graph's score changes against
     fp32 on the benchmark's journal texts;
(c)  the gateway + Triton, as `make serve` runs them, with Triton's statistics for every row.
Peers (issue 20, `load_tests/peers.py`): for each model exported from a sequence-classification
checkpoint, the stack, Infinity and LitServe on that checkpoint, from wrk at c=32 and c=256, with
their scores checked against the stack's.
HTTP systems run closed loop at each concurrency (saturation: the best of them), then open loop at
25/50/70/90% of their saturation (Poisson arrivals, latency from the due time). One text per request.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.emotion.zero_shot import load_prototype_phrases, minilm_path
from exporters.encoder_serving import MODEL_VERSION, ONNX_FILE
from exporters.onnx_tools import cpu_session
from gateway.emotions.model import EmotionModel
from load_tests.bench_report import (
    CLIENT_COLUMNS,
    CPU_TABLE_COLUMNS,
    OPEN_LOOP_FRACTIONS,
    TRITON_COLUMNS,
    Measurements,
    Shape,
    markdown_images,
    measure_http,
    write_plots,
)
from load_tests.cpu_use import StackProcesses
from load_tests.loadgen import format_table, run_load_sync
from load_tests.peers import (
    CYCLES,
    PEER_COLUMNS,
    PeerMeasurements,
    PeerModel,
    PeerOptions,
    measure_peers,
    peers_note,
    target_lines,
)
from load_tests.processes import free_port, gateway_stack, server_process
from load_tests.texts import journal_texts
from samo.contracts.emotion import LOGITS, EmotionModelCard, to_probabilities
from samo.cpus import usable_cores
from samo.generation.onnx_seq2seq import run_dense
from samo.triton.model_config import read_model_config

logger = logging.getLogger(__name__)

NAIVE_UNTUNED = "(a0) FastAPI + PyTorch fp32, untuned"
NAIVE = "(a) FastAPI + PyTorch, tuned"
IN_PROCESS = "(b) ONNX Runtime in-process"
STACK = "(c) gateway + Triton"
COLUMNS = ("model", "system", "load", "throughput_per_s", "p50_ms", "p99_ms", "errors")
IN_PROCESS_BATCH = 32
ARRIVAL_ORDER = f"batch {IN_PROCESS_BATCH}"
SORTED = f"batch {IN_PROCESS_BATCH} sorted"
BEST_POOL = 256
BEST = f"batch {BEST_POOL} sorted"
SORTED_POOLS = {SORTED: IN_PROCESS_BATCH, BEST: BEST_POOL}
# The Triton model's sub-batch limits when its config does not set them (samo/triton/backends/encoder.py).
SUB_BATCH_ROWS = 32
SUB_BATCH_TOKENS = 4096
TRITON_MODEL = "emotion"


@dataclass(frozen=True)
class BenchOptions:
    duration_s: float = 8.0
    concurrency: tuple[int, ...] = (1, 8, 32)
    models: tuple[str, ...] = ("bert-base", "minilm-zero-shot")
    output_dir: Path = Path("load_tests/results")
    warmup_s: float = 2.0
    quantize: Literal["none", "int8"] = "none"
    fractions: tuple[float, ...] = OPEN_LOOP_FRACTIONS
    """Open-loop points, as fractions of each HTTP system's closed-loop saturation; () skips them."""
    untuned_naive: bool = True
    """Also measure (a0), the naive service as usually shipped."""
    peers: bool = True
    """Also measure Infinity and LitServe on the models that have a sequence-classification checkpoint."""
    only_peers: bool = False
    """Only the peer rows (written to emotion-peers.md, leaving the full report as it is)."""
    peer_options: PeerOptions = field(default_factory=PeerOptions)

    @property
    def shape(self) -> Shape:
        return Shape(self.duration_s, self.warmup_s, self.concurrency, self.fractions)


@dataclass(frozen=True)
class PreparedModel:
    name: str
    repository: Path
    naive_model: str
    fp32_repository: Path | None = None
    """With `--quantize int8`: the same model exported in fp32, for the like-for-like rows."""
    checkpoint: Path | None = None
    """The sequence-classification checkpoint exported (None for the zero-shot model): what peers serve."""

    @property
    def model_dir(self) -> Path:
        return self.repository / TRITON_MODEL


@dataclass(frozen=True)
class BertShape:
    """A BERT classifier's size; the defaults are BERT-base's."""

    hidden_size: int = 768
    layers: int = 12
    heads: int = 12
    intermediate_size: int = 3072


CHECKPOINT_SHAPES = {
    "bert-base": BertShape(),
    # Costs nearly nothing: what remains of a request's cost is the stack's own (the overhead benchmark).
    "near-free": BertShape(hidden_size=32, layers=1, heads=2, intermediate_size=64),
    # MiniLM-L6's size (6 layers, hidden 384), the size at which issue 20 first compared the peers.
    "minilm-classifier": BertShape(hidden_size=384, layers=6, heads=12, intermediate_size=1536),
}


def _random_classifier(folder: Path, shape: BertShape) -> Path:
    """A BERT classifier of `shape` with random weights over the 28 labels and MiniLM's uncased vocabulary."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    labels = list(load_prototype_phrases())
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification",
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    return folder


def prepare(
    name: str, workdir: Path, quantize: Literal["none", "int8"], *, fp32_reference: bool = True
) -> PreparedModel:
    """Export `name` for serving; quantized, also in fp32 (unless not `fp32_reference`) for the
    like-for-like rows and the accuracy change."""
    checkpoint = None
    if name in CHECKPOINT_SHAPES:
        checkpoint = _random_classifier(workdir / name / "checkpoint", CHECKPOINT_SHAPES[name])
        model, naive = str(checkpoint), str(checkpoint)
    elif name == "minilm-zero-shot":
        model, naive = None, "zero-shot"
    else:
        raise ValueError(
            f"unknown benchmark model {name!r}; use minilm-zero-shot or {', '.join(CHECKPOINT_SHAPES)}"
        )
    repository = workdir / name / "repository"
    export_emotion(EmotionExportOptions(model=model, repository=repository, quantize=quantize))
    fp32 = None
    if quantize != "none" and fp32_reference:
        fp32 = workdir / name / "repository-fp32"
        export_emotion(EmotionExportOptions(model=model, repository=fp32))
    return PreparedModel(name, repository, naive, fp32, checkpoint)


class LoadShape(Protocol):
    """How a closed-loop run is shaped: `BenchOptions` here, the GPU check's options too."""

    @property
    def concurrency(self) -> tuple[int, ...]: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def warmup_s(self) -> float: ...


def load_rows(model: str, system: str, url: str, texts: list[str], shape: LoadShape) -> list[dict]:
    """One closed-loop run per concurrency against `/v1/emotions`, one text per request, as table rows."""
    bodies = request_bodies(texts)
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


def request_bodies(texts: Sequence[str]) -> list[bytes]:
    return [json.dumps({"texts": [text]}).encode() for text in texts]


def naive_label(tuned: bool, quantize: str) -> str:
    if not tuned:
        return NAIVE_UNTUNED
    precision = "int8 (dynamic)" if quantize == "int8" else "fp32"
    return f"(a) FastAPI + PyTorch {precision}, tuned"


def measure_naive(
    model: PreparedModel, texts: list[str], options: BenchOptions, *, tuned: bool, quantize: str = "none"
) -> Measurements:
    port = free_port()
    command = [sys.executable, "-m", "load_tests.naive_service", "--model", model.naive_model]
    command += ["--port", str(port), "--quantize", quantize] + (["--tuned"] if tuned else [])
    with server_process(command, ready_url=f"http://127.0.0.1:{port}/health"):
        return measure_http(
            model.name,
            naive_label(tuned, quantize),
            f"http://127.0.0.1:{port}/v1/emotions",
            request_bodies(texts),
            options.shape,
        )


def sorted_sub_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices per sub-batch, as the Triton model cuts a dynamic batch: rows sorted by length,
    each sub-batch grown while it has under `max_rows` rows and rows x its longest row <= `max_tokens`."""
    lengths_arr = np.asarray(lengths)
    order = np.argsort(lengths_arr, kind="stable")
    chunks, start, total = [], 0, len(order)
    while start < total:
        stop = start + 1
        while (
            stop < total
            and stop - start < max_rows
            and (stop - start + 1) * lengths_arr[order[stop]] <= max_tokens
        ):
            stop += 1
        chunks.append(order[start:stop])
        start = stop
    return chunks


def _sorted_feeds(served: EmotionModel, texts: Sequence[str], model_dir: Path) -> list[dict[str, np.ndarray]]:
    """Sub-batch feeds for `texts` (one dynamic batch), padded as the Triton model pads them."""
    parameters = read_model_config(model_dir).parameters
    max_rows = (
        int(parameters["sub_batch_rows"].string_value) if "sub_batch_rows" in parameters else SUB_BATCH_ROWS
    )
    max_tokens = (
        int(parameters["sub_batch_tokens"].string_value)
        if "sub_batch_tokens" in parameters
        else SUB_BATCH_TOKENS
    )
    pad_values = json.loads(parameters["pad_values"].string_value) if "pad_values" in parameters else {}
    rows = [served.encode([text]).inputs for text in texts]  # the gateway encodes each request alone
    mask = served.card.contract.padding_mask
    lengths = [int(row[mask].shape[1]) for row in rows]
    feeds = []
    for chunk in sorted_sub_batches(lengths, max_rows, max_tokens):
        width = max(lengths[i] for i in chunk)
        feed = {}
        for name in rows[0]:
            batch = np.full((len(chunk), width), pad_values.get(name, 0), dtype=np.int64)
            for slot, i in enumerate(chunk):
                batch[slot, : lengths[i]] = rows[i][name][0]
            feed[name] = batch
        feeds.append(feed)
    return feeds


def _timed(run: Callable[[int], int], duration_s: float) -> tuple[float, list[float]]:
    """Texts per second and per-call latencies (ms) of `run(call_index) -> texts` over `duration_s`."""
    for warm in range(3):
        run(warm)
    latencies, processed = [], 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s:
        began = time.perf_counter()
        processed += run(len(latencies))
        latencies.append((time.perf_counter() - began) * 1000)
    return processed / (time.perf_counter() - start), latencies


def measure_in_process(
    name: str, model_dir: Path, texts: list[str], duration_s: float, precision: str, loads: Sequence[str]
) -> list[dict]:
    """(b) rows for the graph in `model_dir`: any of batch 1, batch 32 in arrival order, batch 32 or
    256 sorted into sub-batches."""
    served = EmotionModel.load(model_dir)
    session = cpu_session(model_dir / MODEL_VERSION / ONNX_FILE)
    rows = []
    for load in loads:
        if load in SORTED_POOLS:
            pool = SORTED_POOLS[load]
            batches = [
                _sorted_feeds(served, texts[i : i + pool], model_dir)
                for i in range(0, len(texts) - pool + 1, pool)
            ]

            def run_sorted(index: int, batches: list = batches) -> int:
                feeds = batches[index % len(batches)]
                for feed in feeds:
                    session.run([LOGITS], feed)
                return sum(len(next(iter(feed.values()))) for feed in feeds)

            run = run_sorted
        else:
            size = 1 if load == "batch 1" else IN_PROCESS_BATCH
            plain = [served.encode(texts[i : i + size]).inputs for i in range(0, len(texts) - size + 1, size)]

            def run_plain(index: int, plain: list = plain, size: int = size) -> int:
                session.run([LOGITS], plain[index % len(plain)])
                return size

            run = run_plain
        throughput, latencies = _timed(run, duration_s)
        rows.append(
            {
                "model": name,
                "system": f"{IN_PROCESS} {precision}",
                "load": load,
                "throughput_per_s": throughput,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "errors": 0,
            }
        )
    return rows


@dataclass(frozen=True)
class QuantizationChange:
    """int8 scores against fp32 on the same texts, each text run alone (as at c=1)."""

    texts: int
    top1_agreement: float
    decision_agreement: float
    """Labels at or above their threshold: same decision in both, over every (text, label)."""
    labels_changed: float
    """Share of texts whose set of labels at or above threshold differs."""
    max_abs_diff: float
    mean_abs_diff: float

    def line(self, model: str) -> str:
        return (
            f"- {model}: int8 against fp32 on {self.texts} journal texts: top-1 label agrees on "
            f"{self.top1_agreement:.1%}, label decisions at the model's thresholds on "
            f"{self.decision_agreement:.2%} (texts whose label set changed: {self.labels_changed:.1%}), "
            f"score change max {self.max_abs_diff:.4f}, mean {self.mean_abs_diff:.5f}"
        )


def quantization_change(int8_dir: Path, fp32_dir: Path, texts: Sequence[str]) -> QuantizationChange:
    served = EmotionModel.load(int8_dir)
    activation = served.card.activation
    scores = []
    for model_dir in (fp32_dir, int8_dir):
        session = cpu_session(model_dir / MODEL_VERSION / ONNX_FILE)
        logits = [run_dense(session, [LOGITS], served.encode([text]).inputs)[0] for text in texts]
        scores.append(to_probabilities(np.concatenate(logits), activation))
    fp32, int8 = scores
    decisions = (fp32 >= served.thresholds), (int8 >= served.thresholds)
    diff = np.abs(int8 - fp32)
    return QuantizationChange(
        texts=len(texts),
        top1_agreement=float((fp32.argmax(1) == int8.argmax(1)).mean()),
        decision_agreement=float((decisions[0] == decisions[1]).mean()),
        labels_changed=float((decisions[0] != decisions[1]).any(axis=1).mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
    )


def measure_stack(model: PreparedModel, texts: list[str], options: BenchOptions) -> Measurements:
    with gateway_stack(model.repository) as stack:
        return measure_http(
            model.name,
            STACK,
            f"{stack.gateway_url}/v1/emotions",
            request_bodies(texts),
            options.shape,
            triton_grpc_url=stack.triton_grpc_url,
            triton_model=TRITON_MODEL,
            processes=StackProcesses(stack.gateway_pid, stack.triton_pid),
        )


def _row(rows: list[dict], system: str, load: str) -> dict | None:
    return next((r for r in rows if r["system"] == system and r["load"] == load), None)


def summarize(
    model: str,
    rows: list[dict],
    concurrency: tuple[int, ...],
    quantize: str = "none",
    fractions: Sequence[float] = (),
) -> list[str]:
    """Target lines (issue 13, section 7) for one model's rows."""
    top = f"c={max(concurrency)}"
    precision = "int8" if quantize == "int8" else "fp32"
    stack = _row(rows, STACK, top)
    tuned, untuned = _row(rows, naive_label(True, quantize), top), _row(rows, NAIVE_UNTUNED, top)
    limit = _row(rows, f"{IN_PROCESS} {precision}", SORTED)
    arrival = _row(rows, f"{IN_PROCESS} {precision}", ARRIVAL_ORDER)
    best = _row(rows, f"{IN_PROCESS} {precision}", BEST)
    single, stack_one = _row(rows, f"{IN_PROCESS} {precision}", "batch 1"), _row(rows, STACK, "c=1")
    lines = []
    if stack and limit:
        ratio = stack["throughput_per_s"] / limit["throughput_per_s"]
        met = "met" if ratio >= 0.9 else "missed"
        lines.append(
            f"- {model}: (c) at {top} = {ratio:.2f}x the compute limit, (b) {precision} {SORTED} "
            f"(target 0.9x: {met})"
            + (
                f"; {stack['throughput_per_s'] / arrival['throughput_per_s']:.2f}x (b) in arrival order"
                if arrival
                else ""
            )
            + (
                f"; {stack['throughput_per_s'] / best['throughput_per_s']:.2f}x the best in-process batching, "
                f"(b) {BEST}"
                if best
                else ""
            )
        )
    if stack and tuned:
        ratio = stack["throughput_per_s"] / tuned["throughput_per_s"]
        target = f" (target 5x: {'met' if ratio >= 5 else 'missed'})" if model == "bert-base" else ""
        lines.append(
            f"- {model}: (c) at {top} = {ratio:.1f}x the tuned naive service {tuned['system']}{target}"
        )
    if stack and untuned:
        lines.append(
            f"- {model}: (c) at {top} = {stack['throughput_per_s'] / untuned['throughput_per_s']:.1f}x the untuned "
            "naive service (a0)"
        )
    fp32_limit = _row(rows, f"{IN_PROCESS} fp32", SORTED)
    if quantize == "int8" and stack and fp32_limit:
        lines.append(
            f"- {model}: (c) int8 at {top} = {stack['throughput_per_s'] / fp32_limit['throughput_per_s']:.2f}x "
            "the fp32 compute limit"
        )
    if single and stack_one:
        gap = stack_one["p50_ms"] - single["p50_ms"]
        lines.append(
            f"- {model}: p50 at c=1: (c) {stack_one['p50_ms']:.1f} ms vs (b) batch 1 {single['p50_ms']:.1f} ms, "
            f"{gap:+.1f} ms"
        )
    for fraction in fractions:
        opened = next(
            (r for r in rows if r["system"] == STACK and r["load"].startswith(f"open {fraction:.0%} ")), None
        )
        if opened:
            lines.append(
                f"- {model}: (c) open loop at {opened['load'][5:]}: p50 {opened['p50_ms']:.1f} ms, "
                f"p99 {opened['p99_ms']:.1f} ms, {opened.get('unfinished', 0)} unfinished"
            )
    return lines


def measure_model(
    model: PreparedModel, texts: list[str], options: BenchOptions
) -> tuple[Measurements, list[str]]:
    """Every system for one model, back to back; and the int8 score change when quantized."""
    measured = Measurements()
    notes: list[str] = []
    if options.untuned_naive:
        measured.extend(measure_naive(model, texts, options, tuned=False))
    measured.extend(measure_naive(model, texts, options, tuned=True, quantize=options.quantize))
    precision = "int8" if options.quantize == "int8" else "fp32"
    measured.rows += measure_in_process(
        model.name,
        model.model_dir,
        texts,
        options.duration_s,
        precision,
        ("batch 1", ARRIVAL_ORDER, SORTED, BEST),
    )
    if model.fp32_repository is not None:
        fp32_dir = model.fp32_repository / TRITON_MODEL
        measured.rows += measure_in_process(
            model.name, fp32_dir, texts, options.duration_s, "fp32", (SORTED,)
        )
        notes.append(quantization_change(model.model_dir, fp32_dir, texts).line(model.name))
    measured.extend(measure_stack(model, texts, options))
    return measured, notes


def _peers_section(peers: PeerMeasurements, options: BenchOptions) -> str:
    if not peers.rows and not peers.failures:
        return ""
    concurrency = options.peer_options.concurrency
    models = dict.fromkeys(row["model"] for row in peers.rows)
    lines = [line for model in models for line in target_lines(model, peers.rows, concurrency)]
    lines += [agreement.line() for agreement in peers.agreements] + peers.failures
    return (
        "\n## Peers on the same checkpoint (issue 20)\n\nThe fp32 checkpoint served by each system on this "
        "machine, one text per request from wrk (one thread), closed loop; each row after a "
        f"{options.peer_options.warmup_s:g} s warm-up at its concurrency, for at least "
        f"{options.peer_options.duration_s:g} s and {CYCLES} turns of every connection (at most "
        f"{options.peer_options.max_duration_s:g} s: `seconds`). {peers_note()}\n\n"
        + format_table(peers.rows, PEER_COLUMNS)
        + "\n"
        + "\n".join(lines)
        + "\n"
    )


def run_benchmark(options: BenchOptions) -> str:
    texts = journal_texts()
    measured = Measurements()
    peers = PeerMeasurements()
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="samo-bench-") as workdir:
        for name in options.models:
            model = prepare(name, Path(workdir), options.quantize)
            if not options.only_peers:
                model_measured, notes = measure_model(model, texts, options)
                measured.extend(model_measured)
                summary += summarize(
                    name, model_measured.rows, options.concurrency, options.quantize, options.fractions
                )
                summary += notes
            # Peers run the fp32 checkpoint: in an int8 run there is nothing like for like to serve.
            if options.peers and model.checkpoint is not None and options.quantize == "none":
                served = PeerModel(
                    name,
                    model.checkpoint,
                    model.repository,
                    model.model_dir / MODEL_VERSION / ONNX_FILE,
                    EmotionModelCard.read(model.model_dir).labels,
                )
                peers.extend(measure_peers(served, texts, Path(workdir), options.peer_options))
    options.output_dir.mkdir(parents=True, exist_ok=True)
    if options.only_peers:
        report = (
            f"# Emotion peers\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{platform.processor() or platform.machine()}, {len(texts)} journal texts.\n"
            + _peers_section(peers, options)
        )
        (options.output_dir / "emotion-peers.md").write_text(report)
        return report
    report_path = options.output_dir / f"emotion-{options.quantize}.md"
    precision = "int8" if options.quantize == "int8" else "fp32"
    limits = {
        (row["model"], f"(b) {row['system'][len(IN_PROCESS) + 1 :]} {row['load']}"): row["throughput_per_s"]
        for row in measured.rows
        if row["system"].startswith(IN_PROCESS) and row["load"] in SORTED_POOLS
    }
    plots = write_plots(
        measured, options.output_dir / "plots", f"emotion-{options.quantize}", unit="texts/s", limits=limits
    )
    header = (
        f"# Emotion benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {usable_cores()} usable cores, served graph "
        f"{precision}, {options.duration_s:g} s per point after {options.warmup_s:g} s warm-up, one text "
        f"per request, {len(texts)} journal texts of 1 to 3 sentences. Closed loop at "
        f"{', '.join(f'c={c}' for c in options.concurrency)}; open loop (Poisson arrivals, latency from the "
        f"due time) at {', '.join(f'{f:.0%}' for f in options.fractions) or 'no'} fractions of each HTTP "
        "system's best closed-loop throughput. (a) tuned: PyTorch threads = usable cores, every forward on "
        "one thread. (b) sorted: the compute limit, batches of 32 (what one dynamic batch holds at c=32) or 256 "
        "cut into length-sorted sub-batches as the Triton model does.\n\n"
    )
    report = (
        header
        + format_table(measured.rows, CLIENT_COLUMNS)
        + "\n"
        + "\n".join(summary)
        + "\n\n## Triton's view of each (c) row\n\nPer request: queue and compute time (ms); per execution: "
        "mean batch (inferences per execution) and compute time.\n\n"
        + format_table(measured.triton_rows, TRITON_COLUMNS)
        + "\n## Where the cores go in each closed-loop (c) row\n\ncores_busy: CPU seconds per second of all "
        f"parts together (the machine has {usable_cores()}); then CPU milliseconds per answered request "
        "of the gateway, tritonserver (gRPC, batching), "
        "the Python stubs (ONNX Runtime and the model code) and the load generator.\n\n"
        + format_table(measured.cpu_rows, CPU_TABLE_COLUMNS)
        + _peers_section(peers, options)
        + "\n"
        + markdown_images(plots, options.output_dir)
    )
    report_path.write_text(report)
    return report
