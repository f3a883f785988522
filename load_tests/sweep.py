"""`samo bench sweep`: Triton's batching settings for the text encoders, measured, with the table kept.

For the emotion model (`POST /v1/emotions`, one journal text per request) and the sentence embedder
(`POST /v1/summarize`, extractive: one request embeds every sentence of an 8-sentence entry), each
setting is written into the exported model's config.pbtxt (through Triton's protobuf, as the exporter
writes it), a fresh stack is started, and the light generator measures p50 at c=1 (what a lone user
waits: a lone request waits out the whole queue delay) and throughput and p99 at the highest
concurrency, with Triton's view (mean batch, texts per call, queue time). One setting varies at a time
around the exporter's defaults (`exporters/encoder_serving.py`) and the gateway's (`samo/settings.py`):
- `max_queue_delay_microseconds`;
- `preferred_batch_size` (none, or lists);
- model instances x ONNX Runtime intra-op threads per instance;
- the gateway's `coalesce_in_flight` (gateway/coalescing.py): Triton calls open per encoder before
  concurrent requests wait and join one call; 0 joins nothing. For these rows a second table gives each
  concurrency: latency, texts per Triton call and the CPU each process spends per answered request.
Then Triton's response cache (`tritonserver --cache-config local,size=...`, `response_cache { enable:
true }` in the model's config) with repeated inputs (a few entries analysed again and again) and with
unique inputs (its cost when nothing repeats). The report names the best setting, and the best
`coalesce_in_flight`, by the rule in `best`; the exporter's and the gateway's defaults follow the table.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from exporters.embedder import EmbedderExportOptions, export_embedder
from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.encoder_serving import PREFERRED_BATCH_SIZES, QUEUE_DELAY_US
from load_tests.bench_report import markdown_images
from load_tests.cpu_use import CPU_COLUMNS, StackProcesses, cpu_use
from load_tests.loadgen import LoadResult, format_table, run_load_sync
from load_tests.processes import gateway_stack
from load_tests.texts import journal_texts
from load_tests.triton_view import watch
from samo.settings import GatewaySettings
from samo.triton.model_config import read_model_config, write_model_config

logger = logging.getLogger(__name__)

# Triton's response cache size for the cache rows: ample for the benchmark's few thousand answers.
CACHE_BYTES = 64 << 20
REPEATED_ENTRIES = 16
"""Distinct entries in the repeated workload (journal entries re-analysed)."""
UNIQUE_ENTRIES = 20_000
# The gateway's default, which every row but the coalescing ones keeps.
COALESCE_IN_FLIGHT: int = GatewaySettings.model_fields["coalesce_in_flight"].default
COLUMNS = (
    "model",
    "axis",
    "queue_delay_us",
    "preferred",
    "instances",
    "cache",
    "coalesce_in_flight",
    "inputs",
    "c1_p50_ms",
    "top_throughput_per_s",
    "top_p99_ms",
    "triton_batch",
    "texts_per_call",
    "triton_queue_ms",
    "cache_hit_rate",
)
COALESCING_COLUMNS = (
    "model",
    "coalesce_in_flight",
    "load",
    "throughput_per_s",
    "p50_ms",
    "p95_ms",
    "texts_per_call",
    *CPU_COLUMNS,
)


@dataclass(frozen=True)
class Setting:
    """What the sweep sets for one row: the model's config.pbtxt, and the gateway's coalescing."""

    queue_delay_us: int = QUEUE_DELAY_US
    preferred: tuple[int, ...] = PREFERRED_BATCH_SIZES
    instances: int = 1
    threads: int = 2
    cache: bool = False
    coalesce_in_flight: int = COALESCE_IN_FLIGHT

    def describe(self) -> dict[str, object]:
        return {
            "queue_delay_us": self.queue_delay_us,
            "preferred": ",".join(map(str, self.preferred)) or "none",
            "instances": f"{self.instances}x{self.threads} threads",
            "cache": "on" if self.cache else "off",
            "coalesce_in_flight": self.coalesce_in_flight,
        }

    def gateway_environment(self) -> dict[str, str]:
        """Set on every row, so that a `SAMO_COALESCE_IN_FLIGHT` in the caller's environment cannot
        change what a row measures."""
        return {"SAMO_COALESCE_IN_FLIGHT": str(self.coalesce_in_flight)}


@dataclass(frozen=True)
class SweepOptions:
    models: tuple[str, ...] = ("emotion", "embedder")
    queue_delays_us: tuple[int, ...] = (0, 100, 500, 1000, 2000, 5000)
    preferred: tuple[tuple[int, ...], ...] = ((), (16, 32), (8, 16, 32), (32,))
    instances: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2))
    """(instances, intra-op threads per instance)."""
    coalesce_in_flight: tuple[int, ...] = (0, 1, 2, 4, 8)
    """The gateway's `coalesce_in_flight` values (0: off)."""
    cache: bool = True
    concurrency: tuple[int, ...] = (1, 32)
    duration_s: float = 8.0
    warmup_s: float = 2.0
    quantize: str = "none"
    output_dir: Path = Path("load_tests/results")


@dataclass(frozen=True)
class Workload:
    """The route and request bodies that make a model work."""

    route: str
    repeated: list[bytes]
    unique: list[bytes]


def split(bodies: list[bytes], parts: int) -> list[list[bytes]]:
    """`parts` disjoint slices of `bodies`."""
    size = len(bodies) // parts
    return [bodies[i * size : (i + 1) * size] for i in range(parts)]


def workloads() -> dict[str, Workload]:
    import json

    texts = list(
        dict.fromkeys(journal_texts(UNIQUE_ENTRIES, seed=7))
    )  # one-phrase entries repeat: drop repeats
    # Extractive summaries embed every sentence of an entry: entries of 8 sentences of the same phrases.
    entries = [" ".join(texts[i : i + 4]) for i in range(0, len(texts) - 4, 4)]

    def emotion(batch: Sequence[str]) -> list[bytes]:
        return [json.dumps({"texts": [text]}).encode() for text in batch]

    def summary(batch: Sequence[str]) -> list[bytes]:
        return [json.dumps({"texts": [entry], "model": "extractive"}).encode() for entry in batch]

    return {
        "emotion": Workload("/v1/emotions", emotion(texts[:REPEATED_ENTRIES]), emotion(texts)),
        "embedder": Workload("/v1/summarize", summary(entries[:REPEATED_ENTRIES]), summary(entries)),
    }


def cache_args() -> tuple[str, ...]:
    """tritonserver flags for the cache rows."""
    from samo.triton.local_server import response_cache_args

    return response_cache_args(CACHE_BYTES)


def apply(model_dir: Path, setting: Setting) -> None:
    """Write `setting` into the model's config.pbtxt (queue delay, preferred sizes, instances, threads,
    response cache), keeping everything else the exporter wrote."""
    config = read_model_config(model_dir)
    config.dynamic_batching.max_queue_delay_microseconds = setting.queue_delay_us
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.preferred_batch_size.extend(setting.preferred)
    config.instance_group[0].count = setting.instances
    config.parameters["intra_op_threads"].string_value = str(setting.threads)
    config.response_cache.enable = setting.cache
    write_model_config(model_dir, config)


def settings_to_sweep(options: SweepOptions) -> list[tuple[str, Setting]]:
    """(axis, setting): one value changed at a time around the exporter's defaults."""
    base = Setting()
    swept = [("default", base)]
    swept += [
        ("queue delay", replace(base, queue_delay_us=d))
        for d in options.queue_delays_us
        if d != base.queue_delay_us
    ]
    swept += [("preferred", replace(base, preferred=p)) for p in options.preferred if p != base.preferred]
    swept += [
        ("instances", replace(base, instances=n, threads=t))
        for n, t in options.instances
        if (n, t) != (base.instances, base.threads)
    ]
    swept += [
        ("coalescing", replace(base, coalesce_in_flight=n))
        for n in options.coalesce_in_flight
        if n != base.coalesce_in_flight
    ]
    return swept


@dataclass
class SweepResult:
    """Rows of a sweep: one per setting, and one per setting and concurrency (`loads`)."""

    rows: list[dict] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    """Lines naming the best setting, and the cache's gain."""

    def add(self, axis: str, inputs: str, row: dict, loads: list[dict]) -> None:
        self.rows.append({**row, "axis": axis, "inputs": inputs})
        self.loads += [{**load, "axis": axis, "inputs": inputs} for load in loads]

    def extend(self, other: SweepResult) -> None:
        self.rows += other.rows
        self.loads += other.loads
        self.summary += other.summary

    def coalescing_loads(self) -> list[dict]:
        """The default's and the coalescing rows' concurrencies, each model's by `coalesce_in_flight`."""
        chosen = [r for r in self.loads if r["axis"] in ("default", "coalescing")]
        order = {model: i for i, model in enumerate(dict.fromkeys(r["model"] for r in chosen))}
        return sorted(chosen, key=lambda r: (order[r["model"]], r["coalesce_in_flight"]))


def load_row(
    model: str, setting: Setting, result: LoadResult, triton: dict[str, object], cpu: dict[str, object]
) -> dict[str, object]:
    """One concurrency of one setting: latency, texts per Triton call, CPU per answered request."""
    return {
        "model": model,
        **setting.describe(),
        "load": f"c={result.concurrency}",
        "throughput_per_s": result.throughput,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "texts_per_call": triton.get("texts_per_call"),
        **cpu,
    }


def measure_setting(
    repository: Path,
    model: str,
    setting: Setting,
    bodies: list[list[bytes]],
    route: str,
    options: SweepOptions,
    *,
    unique: bool = True,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """One fresh stack with `setting`: its row, and a row per concurrency (`load_row`). `unique`: each
    run gets its own slice of `bodies` (a run never repeats what an earlier one sent, so the response
    cache cannot hit), else every run cycles `bodies[0]`."""
    apply(repository / model, setting)
    triton_args = cache_args() if setting.cache else ()
    row: dict[str, object] = {"model": model, **setting.describe()}
    loads = []
    top = max(options.concurrency)
    with gateway_stack(repository, settings=setting.gateway_environment(), triton_args=triton_args) as stack:
        processes = StackProcesses(stack.gateway_pid, stack.triton_pid)
        for run, clients in enumerate(options.concurrency):
            with watch(stack.triton_grpc_url) as view, cpu_use(processes) as cpu:
                result = run_load_sync(
                    stack.gateway_url + route,
                    bodies[run] if unique else bodies[0],
                    concurrency=clients,
                    duration_s=options.duration_s,
                    warmup_s=options.warmup_s,
                )
            if not result.successes:  # a setting that answers nothing is a result too; the sweep goes on
                logger.warning(
                    "%s %s: no request answered at c=%d (%d errors)", model, setting, clients, result.errors
                )
            columns = view.columns(model)
            loads.append(load_row(model, setting, result, columns, cpu.columns(result.throughput)))
            if clients == 1:
                row["c1_p50_ms"] = result.p50_ms
            if clients == top:
                row["top_throughput_per_s"] = result.throughput
                row["top_p99_ms"] = result.p99_ms
                for column in ("triton_batch", "texts_per_call", "triton_queue_ms", "cache_hit_rate"):
                    row[column] = columns.get(column)
    logger.info("%s %s: %s", model, setting, row)
    return row, loads


def best(rows: Sequence[dict]) -> dict | None:
    """The row with the highest throughput at the top concurrency among those whose c=1 p50 is within
    10% of the best c=1 p50 (batching must not cost a lone user)."""
    candidates = [r for r in rows if "c1_p50_ms" in r]
    if not candidates:
        return None
    fastest = min(float(r["c1_p50_ms"]) for r in candidates)
    fair = [r for r in candidates if float(r["c1_p50_ms"]) <= 1.1 * fastest] or candidates
    return max(fair, key=lambda r: float(r["top_throughput_per_s"]))


def recommend(rows: Sequence[dict], model: str) -> str:
    """The best setting (`best`) of `model`, cache rows aside."""
    chosen = best([r for r in rows if r["model"] == model and r["cache"] == "off"])
    if chosen is None:
        return f"- {model}: nothing measured"
    return (
        f"- {model}: queue delay {chosen['queue_delay_us']} us, preferred {chosen['preferred']}, "
        f"{chosen['instances']}, coalesce_in_flight {chosen['coalesce_in_flight']}: "
        f"{float(chosen['top_throughput_per_s']):.1f}/s at the top concurrency, "
        f"c=1 p50 {float(chosen['c1_p50_ms']):.2f} ms"
    )


def recommend_coalescing(rows: Sequence[dict], model: str) -> str:
    """The best `coalesce_in_flight` (`best`) of `model`, among the default and the coalescing rows."""
    chosen = best([r for r in rows if r["model"] == model and r["axis"] in ("default", "coalescing")])
    if chosen is None:
        return f"- {model}, coalescing: nothing measured"
    return (
        f"- {model}, coalescing: coalesce_in_flight {chosen['coalesce_in_flight']}: "
        f"{float(chosen['top_throughput_per_s']):.1f}/s at the top concurrency "
        f"(p99 {float(chosen['top_p99_ms']):.2f} ms, {float(chosen['texts_per_call'] or 0):.2f} texts per "
        f"Triton call), c=1 p50 {float(chosen['c1_p50_ms']):.2f} ms"
    )


def cache_lines(rows: Sequence[dict], model: str) -> list[str]:
    def pick(cache: str, inputs: str) -> dict | None:
        return next(
            (r for r in rows if (r["model"], r["cache"], r["inputs"]) == (model, cache, inputs)), None
        )

    lines = []
    for inputs in ("repeated", "unique"):
        off, on = pick("off", inputs), pick("on", inputs)
        if off and on:
            lines.append(
                f"- {model}, {inputs} inputs: response cache on = "
                f"{float(on['top_throughput_per_s']) / float(off['top_throughput_per_s']):.2f}x throughput, "
                f"c=1 p50 {float(on['c1_p50_ms']):.2f} ms vs {float(off['c1_p50_ms']):.2f} ms"
            )
    return lines


def write_plots(rows: Sequence[dict], folder: Path) -> list[Path]:
    from load_tests.plots import plot_throughput_vs_concurrency

    delay_rows = [r for r in rows if r["axis"] in ("default", "queue delay") and r["cache"] == "off"]
    if not delay_rows:
        return []
    return [
        plot_throughput_vs_concurrency(
            [{**r, "system": r["model"]} for r in delay_rows],
            folder / "sweep-queue-delay-throughput.png",
            x_key="queue_delay_us",
            y_key="top_throughput_per_s",
            y_label="requests/s at the top concurrency",
            title="Dynamic batching: queue delay against throughput",
        ),
        plot_throughput_vs_concurrency(
            [{**r, "system": r["model"]} for r in delay_rows],
            folder / "sweep-queue-delay-p50.png",
            x_key="queue_delay_us",
            y_key="c1_p50_ms",
            y_label="p50 at c=1 (ms)",
            title="Dynamic batching: queue delay against a lone request's latency",
        ),
    ]


def export_model(model: str, repository: Path, quantize: str) -> None:
    if model == "emotion":
        export_emotion(EmotionExportOptions(repository=repository, quantize=quantize))  # type: ignore[arg-type]
    elif model == "embedder":
        export_embedder(EmbedderExportOptions(repository=repository))
    else:
        raise ValueError(f"unknown sweep model {model!r}; use emotion or embedder")


def sweep_model(model: str, repository: Path, load: Workload, options: SweepOptions) -> SweepResult:
    """Every setting of `options` for `model`, exported in `repository`: a fresh stack each."""
    measured = SweepResult()
    for axis, setting in settings_to_sweep(options):
        unique = split(load.unique, len(options.concurrency))
        measured.add(
            axis, "unique", *measure_setting(repository, model, setting, unique, load.route, options)
        )
    measured.summary += [recommend(measured.rows, model), recommend_coalescing(measured.rows, model)]
    if options.cache:
        for inputs, bodies in (("repeated", load.repeated), ("unique", load.unique)):
            for cache in (False, True):
                if not cache and inputs == "unique":
                    continue  # the default row above is this one
                row, loads = measure_setting(
                    repository,
                    model,
                    Setting(cache=cache),
                    split(bodies, len(options.concurrency)) if inputs == "unique" else [bodies],
                    load.route,
                    options,
                    unique=inputs == "unique",
                )
                measured.add("cache", inputs, row, loads)
        default = next(r for r in measured.rows if r["axis"] == "default")
        measured.rows.append({**default, "axis": "cache"})  # unique inputs, cache off, for the comparison
        measured.summary += cache_lines([r for r in measured.rows if r["axis"] == "cache"], model)
    return measured


def run_sweep(options: SweepOptions) -> str:
    work = workloads()
    measured = SweepResult()
    with tempfile.TemporaryDirectory(prefix="samo-sweep-") as workdir:
        for model in options.models:
            repository = Path(workdir) / model
            export_model(model, repository, options.quantize)
            measured.extend(sweep_model(model, repository, work[model], options))
    options.output_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(measured.rows, options.output_dir / "plots")
    header = (
        f"# Batching sweep\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}; `samo bench sweep`, {options.duration_s:g} s per point "
        f"after {options.warmup_s:g} s warm-up, closed loop at {', '.join(f'c={c}' for c in options.concurrency)}; "
        f"emotion: the embedded MiniLM zero-shot model (quantization {options.quantize}), one journal text per "
        "request; embedder: extractive summaries of 8-sentence entries. One setting varies at a time around "
        f"the exporter's defaults (queue delay {QUEUE_DELAY_US} us, preferred "
        f"{','.join(map(str, PREFERRED_BATCH_SIZES))}, 1 instance x 2 threads) and the gateway's "
        f"(coalesce_in_flight {COALESCE_IN_FLIGHT}). Repeated inputs: "
        f"{REPEATED_ENTRIES} distinct requests cycled. texts_per_call: Triton's inferences per request "
        "(texts, or the embedder's sentences, in one call from the gateway; probes included), at the top "
        "concurrency.\n\n"
    )
    report = (
        header
        + format_table(measured.rows, COLUMNS)
        + "\nBest setting (highest throughput whose c=1 p50 is within 10% of the best):\n\n"
        + "\n".join(measured.summary)
        + "\n\n## Gateway coalescing at each concurrency\n\nThe default's and the coalescing rows: "
        "requests/s (emotion: texts/s), latency, texts per Triton call; cores_busy: CPU seconds per second "
        "of all parts together; then CPU milliseconds per answered request of the gateway, tritonserver, "
        "its Python stubs (the model) and the load generator.\n\n"
        + format_table(measured.coalescing_loads(), COALESCING_COLUMNS)
        + "\n"
        + markdown_images(plots, options.output_dir)
    )
    (options.output_dir / "sweep.md").write_text(report)
    return report
