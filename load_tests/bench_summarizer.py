"""`samo bench summarizer`: PyTorch `generate`, optimum's ONNX Runtime model and this stack, in one run.

(a) transformers `generate` in PyTorch, in-process, one request at a time (2 threads);
(b) optimum's `ORTModelForSeq2SeqLM` (use_cache=True: encoder, decoder and decoder-with-past graphs,
    2 intra-op threads, spinning off), in-process, one request at a time;
(c) the gateway + Triton: `POST /v1/summarize` on the model `samo export summarizer` writes, which
    generates concurrent requests together on the shared seq2seq engine.

The model is t5-small-sized (6+6 layers, d_model 512, vocabulary 32128) with seeded random weights, and
every request asks for exactly `new_tokens` new tokens (`min_new_tokens` = `max_new_tokens`, so the
end-of-sequence token is banned until then): every system does the same work, whatever the random
weights prefer. Each request is a different text of `input_tokens` tokens (random words of a word-level
vocabulary); every system gets the same texts. The run fails when any request comes back with another
number of new tokens.

Concurrency c means c clients in a closed loop, each sending its next request when the last one is
answered, until the row's requests are used up. (a) and (b) serve one request at a time: their
requests wait in a FIFO queue for the single worker, so at c=8 a latency includes that wait, which is
what a service built on them would show. Throughput is new tokens over the row's wall time (first
request sent to last answer). (c) is driven over HTTP by httpx, one keep-alive connection per client:
the light load generator (load_tests/loadgen.py) discards response bodies, and the new-token counts
are needed; at one to several seconds per request, httpx's ~2 ms of client CPU per request is below
the noise. Rows run system after system for each decoding and concurrency, so the ratios compare
back-to-back numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.bench_report import markdown_images
from load_tests.loadgen import format_table
from load_tests.processes import gateway_stack
from load_tests.triton_view import watch

logger = logging.getLogger(__name__)

TORCH = "(a) PyTorch generate"
ORT = "(b) optimum ONNX Runtime"
STACK = "(c) gateway + Triton"
SYSTEMS = (TORCH, ORT, STACK)
COLUMNS = (
    "system",
    "decoding",
    "concurrency",
    "requests",
    "tokens_per_s",
    "p50_s",
    "p95_s",
    "vs_a",
    "vs_b",
    "mean_batch",
    "triton_queue_ms",
    "triton_compute_ms",
)
MODEL_NAME = "bench_t5"
THREADS = 2
SEED = 0
# Word-level vocabulary: <pad>, </s>, <unk>, then w0 .. w32099 (t5-small's tokenizer has 32100 tokens).
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
WORDS = 32100
VOCAB_SIZE = 32128
# The closed-loop wait for an answer from the gateway; a beam-4 batch of 8 takes seconds on 2 cores.
HTTP_TIMEOUT_S = 600.0
# How long Triton may take to count a row's requests in its statistics.
STATS_WAIT_S = 5.0


@dataclass(frozen=True)
class SummarizerBenchOptions:
    min_requests: int = 6
    """Requests measured per system, decoding and concurrency (each a different text), at least."""
    rounds: int = 2
    """Closed-loop rounds per client: a row at concurrency c measures max(min_requests, c * rounds)
    requests."""
    concurrency: tuple[int, ...] = (1, 8)
    """Closed-loop clients; (a) and (b) queue them for their single worker."""
    beams: tuple[int, ...] = (1, 4)
    """Beam widths; 1 is greedy decoding."""
    new_tokens: int = 64
    """New tokens every request generates (min_new_tokens = max_new_tokens)."""
    input_tokens: int = 400
    """Tokens per input text, the end-of-sequence token included."""
    output: Path = Path("load_tests/results/summarizer.md")
    work_dir: Path | None = None
    """Where the checkpoint and the model repository are written; a temporary folder when unset."""

    def __post_init__(self) -> None:
        if self.min_requests < 1 or self.rounds < 1:
            raise ValueError(
                f"`min_requests` and `rounds` must be at least 1, got {self.min_requests}, {self.rounds}"
            )
        if not 2 <= self.input_tokens <= 512:
            raise ValueError(
                f"`input_tokens` must be between 2 and 512 (t5's input limit), got {self.input_tokens}"
            )
        if not 1 <= self.new_tokens <= 1024:
            raise ValueError(f"`new_tokens` must be between 1 and 1024, got {self.new_tokens}")
        if not self.beams or min(self.beams) < 1:
            raise ValueError(f"`beams` must be positive beam widths, got {self.beams}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"`concurrency` must be positive, got {self.concurrency}")

    def requests(self, concurrency: int) -> int:
        """Requests measured in a row at `concurrency`."""
        return max(self.min_requests, concurrency * self.rounds)


@dataclass(frozen=True)
class Cell:
    """One measured cell: a system at one decoding and concurrency."""

    system: str
    beams: int
    concurrency: int
    latencies_s: tuple[float, ...]
    new_tokens: tuple[int, ...]
    wall_s: float
    executions: int | None = None
    """Triton model executions the row took ((c) only): requests over executions is the mean batch."""
    triton_queue_ms: float | None = None
    """(c) only: mean time a request waited in Triton's queue (Triton's statistics)."""
    triton_compute_ms: float | None = None
    """(c) only: mean compute time Triton charged a request (its batch's generation)."""

    @property
    def tokens_per_s(self) -> float:
        return sum(self.new_tokens) / self.wall_s

    def row(self) -> dict[str, object]:
        return {
            "system": self.system,
            "decoding": decoding_name(self.beams),
            "concurrency": self.concurrency,
            "requests": len(self.latencies_s),
            "tokens_per_s": self.tokens_per_s,
            "p50_s": statistics.median(self.latencies_s),
            "p95_s": float(np.percentile(self.latencies_s, 95)),
            "mean_batch": len(self.latencies_s) / self.executions if self.executions else None,
            "triton_queue_ms": self.triton_queue_ms,
            "triton_compute_ms": self.triton_compute_ms,
        }


def decoding_name(beams: int) -> str:
    return "greedy" if beams == 1 else f"beam {beams}"


def build_tokenizer(max_input_tokens: int = 512) -> Any:
    """A word-level tokenizer over `w0` .. `w32099` that appends `</s>`, as T5's tokenizer does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": len(SPECIAL_TOKENS) + i for i in range(WORDS)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_input_tokens,
        model_input_names=["input_ids", "attention_mask"],
    )


def build_checkpoint(folder: Path, seed: int = SEED) -> Path:
    """A t5-small-sized T5 with seeded random weights and the word-level tokenizer, saved to `folder`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).eval().save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def bench_texts(count: int, input_tokens: int, seed: int = SEED) -> list[str]:
    """`count` different texts of `input_tokens - 1` random words (the tokenizer appends `</s>`)."""
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, WORDS, input_tokens - 1)) for _ in range(count)]


def generate_kwargs(beams: int, new_tokens: int) -> dict[str, object]:
    """`generate` arguments for exactly `new_tokens` new tokens (the same for PyTorch and optimum)."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "num_beams": beams,
        "do_sample": False,
        "no_repeat_ngram_size": 0,
        "repetition_penalty": 1.0,
        "length_penalty": 1.0,
        "early_stopping": False,
    }


# A request: (text, beams, new tokens) in, new tokens generated out.
Summarize = Callable[[str, int, int], int]


def in_process_summarizer(model: Any, tokenizer: Any) -> Summarize:
    """One request through `model.generate` (PyTorch or optimum): tokenize, generate, decode."""
    import torch

    def summarize(text: str, beams: int, new_tokens: int) -> int:
        batch = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**batch, **generate_kwargs(beams, new_tokens))
        new = output[0, 1:]  # after the decoder start token; one sequence, so no padding
        tokenizer.decode(new, skip_special_tokens=True)
        return int(new.shape[0])

    return summarize


def load_torch(folder: Path) -> Summarize:
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    torch.set_num_threads(THREADS)
    model = T5ForConditionalGeneration.from_pretrained(folder).eval()
    return in_process_summarizer(model, AutoTokenizer.from_pretrained(folder))


def load_optimum(folder: Path) -> Summarize:
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoTokenizer

    from samo.generation.onnx_seq2seq import session_options

    model = ORTModelForSeq2SeqLM.from_pretrained(
        folder, export=True, use_cache=True, session_options=session_options(THREADS)
    )
    return in_process_summarizer(model, AutoTokenizer.from_pretrained(folder))


async def closed_loop(
    call: Callable[[str], Awaitable[int]], texts: Sequence[str], concurrency: int
) -> tuple[list[float], list[int], float]:
    """Latencies and new-token counts of every text, `concurrency` clients in a closed loop, and the
    wall time from the first request to the last answer."""
    pending: Iterator[str] = iter(texts)
    latencies: list[float] = []
    counts: list[int] = []

    async def client() -> None:
        for text in pending:  # one iterator shared by the clients: each text is sent once
            began = time.perf_counter()
            counts.append(await call(text))
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, counts, time.perf_counter() - start


def _cell(system: str, beams: int, concurrency: int, measured: tuple[list[float], list[int], float]) -> Cell:
    latencies, counts, wall = measured
    cell = Cell(system, beams, concurrency, tuple(latencies), tuple(counts), wall)
    logger.info(
        "%s %s c=%d: %.1f new tokens/s, p50 %.2f s",
        system,
        decoding_name(beams),
        concurrency,
        cell.tokens_per_s,
        statistics.median(latencies),
    )
    return cell


def check_tokens(cell: Cell, expected: int) -> None:
    wrong = sorted({count for count in cell.new_tokens if count != expected})
    if wrong or not cell.new_tokens:
        raise RuntimeError(
            f"{cell.system} {decoding_name(cell.beams)} c={cell.concurrency}: requests generated "
            f"{wrong or 'no'} new tokens, not {expected}; the systems would not be doing the same work"
        )


def measure_in_process(
    system: str, summarize: Summarize, texts: Sequence[str], beams: int, concurrency: int, new_tokens: int
) -> Cell:
    """Requests from `concurrency` clients queue for one worker thread that serves them in order."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker") as worker:

        async def run() -> tuple[list[float], list[int], float]:
            loop = asyncio.get_running_loop()

            def call(text: str) -> Awaitable[int]:
                return loop.run_in_executor(worker, summarize, text, beams, new_tokens)

            return await closed_loop(call, texts, concurrency)

        return _cell(system, beams, concurrency, asyncio.run(run()))


def summarize_body(text: str, beams: int, new_tokens: int) -> dict[str, object]:
    return {
        "texts": [text],
        "model": MODEL_NAME,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "num_beams": beams,
    }


@dataclass(frozen=True)
class Stack:
    url: str
    """The gateway's summarize endpoint."""
    triton_http: str
    """Triton's HTTP host:port, for the model's execution statistics."""
    triton_grpc: str = ""
    """Triton's gRPC host:port, for its view of queue and compute time."""

    def counts(self) -> tuple[int, int]:
        """Requests and model executions (one per dynamic batch) of the summarizer so far."""
        stats_url = f"http://{self.triton_http}/v2/models/{MODEL_NAME}/stats"
        with urllib.request.urlopen(stats_url, timeout=10) as response:
            (stats,) = json.load(response)["model_stats"]
        return int(stats["inference_count"]), int(stats["execution_count"])

    def executions_since(self, before: tuple[int, int], requests: int) -> int:
        """Model executions since `before`, once all `requests` are counted: Triton records a batch's
        statistics just after it sends the responses, so the last batch can be missing for a moment."""
        deadline = time.monotonic() + STATS_WAIT_S
        while True:
            inferences, executions = self.counts()
            if inferences - before[0] >= requests:
                return executions - before[1]
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Triton counted {inferences - before[0]} of {requests} requests after {STATS_WAIT_S:g} s"
                )
            time.sleep(0.05)


def measure_stack(stack: Stack, texts: Sequence[str], beams: int, concurrency: int, new_tokens: int) -> Cell:
    import httpx

    url = stack.url

    async def run() -> tuple[list[float], list[int], float]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, limits=limits) as client:

            async def call(text: str) -> int:
                response = await client.post(url, json=summarize_body(text, beams, new_tokens))
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
                (result,) = response.json()["results"]
                if result.get("method") != "abstractive":
                    raise RuntimeError(f"{url} summarized with {result.get('method')!r}, not the T5 model")
                return int(result["tokens"])

            return await closed_loop(call, texts, concurrency)

    before = stack.counts()
    with contextlib.ExitStack() as scope:
        view = scope.enter_context(watch(stack.triton_grpc)) if stack.triton_grpc else None
        cell = _cell(STACK, beams, concurrency, asyncio.run(run()))
        executions = stack.executions_since(before, len(texts))
    seen = view.views.get(MODEL_NAME) if view else None
    return dataclasses.replace(
        cell,
        executions=executions,
        triton_queue_ms=seen.queue_ms if seen else None,
        triton_compute_ms=seen.compute_ms if seen else None,
    )


def table_rows(cells: Sequence[Cell]) -> list[dict[str, object]]:
    """One row per cell; (c) rows carry their throughput over (a)'s and (b)'s at the same decoding and
    concurrency."""
    speed = {(c.system, c.beams, c.concurrency): c.tokens_per_s for c in cells}
    rows = []
    for cell in cells:
        row = cell.row()
        if cell.system == STACK:
            for column, baseline in (("vs_a", TORCH), ("vs_b", ORT)):
                other = speed.get((baseline, cell.beams, cell.concurrency))
                row[column] = f"{cell.tokens_per_s / other:.2f}x" if other else None
        rows.append(row)
    return rows


# The targets: (c) over (a) at the highest concurrency, (c) over (b) at concurrency 1.
TARGETS = ((TORCH, "(a)", 3.0), (ORT, "(b)", 1.0))


def target_lines(cells: Sequence[Cell]) -> list[str]:
    """Each target that the measured rows can check, with the ratio and whether it was met."""
    speed = {(c.system, c.beams, c.concurrency): c.tokens_per_s for c in cells}
    top = max(c.concurrency for c in cells)
    lines = []
    for (baseline, label, target), level in zip(TARGETS, (top, 1), strict=True):
        for width in sorted({c.beams for c in cells}):
            ours, theirs = speed.get((STACK, width, level)), speed.get((baseline, width, level))
            if ours is None or theirs is None:
                continue
            ratio = ours / theirs
            lines.append(
                f"- {decoding_name(width)}, c={level}: (c) = {ratio:.2f}x {label} "
                f"(target {target:g}x: {'met' if ratio >= target else 'missed'})"
            )
    return lines


def report(cells: Sequence[Cell], options: SummarizerBenchOptions, wall_s: float) -> str:
    counts = ", ".join(f"{options.requests(c)} at c={c}" for c in options.concurrency)
    header = (
        f"# Summarizer benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU; t5-small-sized T5 (6+6 layers, d_model 512, "
        f"vocabulary {VOCAB_SIZE}, random weights, fp32); {options.input_tokens}-token inputs, a different "
        f"text per request; exactly {options.new_tokens} new tokens per request (checked); requests per row: "
        f"{counts}, after one warm-up request per system and decoding; {THREADS} threads per system, "
        f"thread spinning off (ONNX Runtime `allow_spinning` 0, OpenMP `OMP_WAIT_POLICY=PASSIVE`). "
        f"tokens_per_s: new tokens over the row's wall time; (a) and (b) serve one request at a time, so at "
        f"c>1 their latencies include the wait in their queue. mean_batch: (c)'s requests per Triton model "
        f"execution (dynamic batch). Rows of one decoding and concurrency ran "
        f"back to back. Whole run {wall_s / 60:.1f} min.\n\n"
    )
    summary = target_lines(cells)
    return header + format_table(table_rows(cells), COLUMNS) + "\n" + "\n".join(summary) + "\n"


def export_stack_model(checkpoint: Path, repository: Path) -> None:
    from exporters.summarizer.export import SummarizerExportOptions, export_summarizer

    result = export_summarizer(
        SummarizerExportOptions(model=str(checkpoint), name=MODEL_NAME, repository=repository)
    )
    logger.info("%s", result.summary())


@contextlib.contextmanager
def running_stack(repository: Path) -> Iterator[Stack]:
    """Triton on `repository` and the gateway in front of it."""
    with gateway_stack(repository) as stack:
        yield Stack(f"{stack.gateway_url}/v1/summarize", stack.triton_http_url, stack.triton_grpc_url)


def _passive_openmp() -> None:
    """OpenMP threads that sleep when idle, as ONNX Runtime's do with spinning off. libgomp reads the
    policy once, when PyTorch is first imported; spinning threads on a shared 2-core box made `generate`
    about 8x slower here."""
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return
    if "torch" in sys.modules:
        logger.warning(
            "PyTorch was imported before OMP_WAIT_POLICY=PASSIVE was set; (a) runs with spinning threads"
        )
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def run_summarizer_benchmark(options: SummarizerBenchOptions) -> str:
    """Run every row, write the markdown report to `options.output` and return it."""
    _passive_openmp()
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
        return _run(options, options.work_dir)
    with tempfile.TemporaryDirectory(prefix="samo-bench-summarizer-") as work_dir:
        return _run(options, Path(work_dir))


def _run(options: SummarizerBenchOptions, work_dir: Path) -> str:
    began = time.perf_counter()
    checkpoint = build_checkpoint(work_dir / "checkpoint")
    repository = work_dir / "repository"
    export_stack_model(checkpoint, repository)
    summarizers = {TORCH: load_torch(checkpoint), ORT: load_optimum(checkpoint)}

    grid = [(beams, concurrency) for beams in options.beams for concurrency in options.concurrency]
    sizes = [options.requests(concurrency) for _, concurrency in grid]
    texts = bench_texts(len(options.beams) + sum(sizes), options.input_tokens)
    warmups, texts = texts[: len(options.beams)], texts[len(options.beams) :]
    cells: list[Cell] = []
    with running_stack(repository) as stack:
        for warmup, beams in zip(warmups, options.beams, strict=True):
            warm = [
                measure_in_process(s, f, [warmup], beams, 1, options.new_tokens)
                for s, f in summarizers.items()
            ]
            warm.append(measure_stack(stack, [warmup], beams, 1, options.new_tokens))
            for cell in warm:
                check_tokens(cell, options.new_tokens)
        for (beams, concurrency), size in zip(grid, sizes, strict=True):
            row_texts, texts = texts[:size], texts[size:]
            row = [
                measure_in_process(system, summarize, row_texts, beams, concurrency, options.new_tokens)
                for system, summarize in summarizers.items()
            ]
            row.append(measure_stack(stack, row_texts, beams, concurrency, options.new_tokens))
            for cell in row:
                check_tokens(cell, options.new_tokens)
            cells += row
    text = report(cells, options, time.perf_counter() - began)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    text += markdown_images(write_plots(cells, options.output.parent / "plots"), options.output.parent)
    options.output.write_text(text)
    return text


def write_plots(cells: Sequence[Cell], folder: Path) -> list[Path]:
    """Tokens per second against concurrency, and latency per request at the highest concurrency,
    one line per system and decoding."""
    from load_tests.plots import plot_latency_distribution, plot_throughput_vs_concurrency

    rows = [
        {
            "system": f"{c.system}, {decoding_name(c.beams)}",
            "concurrency": c.concurrency,
            "throughput": c.tokens_per_s,
        }
        for c in cells
    ]
    top = max(c.concurrency for c in cells)
    return [
        plot_throughput_vs_concurrency(
            rows,
            folder / "summarizer-throughput.png",
            y_label="new tokens/s",
            title="Summarizer: throughput against concurrency (closed loop)",
        ),
        plot_latency_distribution(
            {f"{c.system}, {decoding_name(c.beams)}": c.latencies_s for c in cells if c.concurrency == top},
            folder / "summarizer-latency.png",
            unit="s",
            title=f"Summarizer: latency per request at c={top}",
        ),
    ]
