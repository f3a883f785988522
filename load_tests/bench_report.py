"""What every `samo bench` reports the same way: saturation, open-loop rows, Triton's view, plots.

A benchmark measures each HTTP system in a closed loop at several concurrencies; the highest
throughput there is its saturation. It then offers Poisson arrivals at fixed fractions of that
(`OPEN_LOOP_FRACTIONS`) and reports latency from each request's due time, which is what a user sees
at that load. Around every row of the stack, Triton's statistics give its own view (queue, compute,
batch sizes). Plots: throughput against concurrency, latency distributions (closed loop at the highest
concurrency; open loop at each fraction), latency against offered load.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from load_tests.cpu_use import CPU_COLUMNS, StackProcesses, cpu_use
from load_tests.loadgen import LoadResult, run_load_sync, run_open_loop_sync
from load_tests.triton_view import VIEW_COLUMNS, TritonWatch, watch

logger = logging.getLogger(__name__)

OPEN_LOOP_FRACTIONS = (0.25, 0.5, 0.7, 0.9)
CLIENT_COLUMNS = (
    "model",
    "system",
    "load",
    "throughput_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "unfinished",
)
TRITON_COLUMNS = ("model", "system", "load", *VIEW_COLUMNS)
CPU_TABLE_COLUMNS = ("model", "system", "load", "throughput_per_s", *CPU_COLUMNS)
# Open loop: connections (requests in flight) the generator may open; beyond it requests wait in the
# generator, and the wait still counts in their latency.
OPEN_LOOP_CONNECTIONS = 256


@dataclass(frozen=True)
class Shape:
    """How long each point runs, and the open-loop fractions of saturation to offer."""

    duration_s: float
    warmup_s: float
    concurrency: tuple[int, ...]
    fractions: tuple[float, ...] = OPEN_LOOP_FRACTIONS


@dataclass
class Measurements:
    """Table rows, Triton's view of them, and the latencies behind them (for plots)."""

    rows: list[dict] = field(default_factory=list)
    triton_rows: list[dict] = field(default_factory=list)
    cpu_rows: list[dict] = field(default_factory=list)
    """Closed-loop rows of the stack: where the cores went (load_tests/cpu_use.py)."""
    closed: dict[tuple[str, str, int], LoadResult] = field(default_factory=dict)
    """(model, system, concurrency) -> closed-loop result."""
    open: dict[tuple[str, str, float], LoadResult] = field(default_factory=dict)
    """(model, system, fraction) -> open-loop result."""

    def extend(self, other: Measurements) -> None:
        self.rows += other.rows
        self.triton_rows += other.triton_rows
        self.cpu_rows += other.cpu_rows
        self.closed.update(other.closed)
        self.open.update(other.open)


def result_row(model: str, system: str, load: str, result: LoadResult) -> dict[str, object]:
    row: dict[str, object] = {
        "model": model,
        "system": system,
        "load": load,
        "throughput_per_s": result.throughput,
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
    }
    if result.offered_rps is not None:
        row["unfinished"] = result.unfinished
    return row


@contextlib.contextmanager
def _maybe_watch(triton_grpc_url: str | None) -> Iterator[TritonWatch | None]:
    if triton_grpc_url is None:
        yield None
        return
    with watch(triton_grpc_url) as view:
        yield view


def _triton_row(
    model: str, system: str, load: str, view: TritonWatch | None, triton_model: str | None
) -> dict:
    if view is None or triton_model is None:
        return {}
    columns = view.columns(triton_model)
    return {"model": model, "system": system, "load": load, **columns} if columns else {}


def measure_http(
    model: str,
    system: str,
    url: str,
    bodies: Sequence[bytes],
    shape: Shape,
    *,
    triton_grpc_url: str | None = None,
    triton_model: str | None = None,
    content_type: str = "application/json",
    processes: StackProcesses | None = None,
) -> Measurements:
    """Closed loop at each concurrency, then open loop at each fraction of the best closed-loop
    throughput; Triton's view of each row when `triton_grpc_url` is given, and the CPU each part used in
    the closed-loop rows when `processes` is. A system that answers nothing at some concurrency fails
    the run: the benchmark compares systems."""
    measured = Measurements()
    for clients in shape.concurrency:
        with _maybe_watch(triton_grpc_url) as view, cpu_use(processes) as cpu:
            result = run_load_sync(
                url,
                bodies,
                concurrency=clients,
                duration_s=shape.duration_s,
                warmup_s=shape.warmup_s,
                content_type=content_type,
            )
        if not result.successes:
            raise RuntimeError(
                f"{system} answered no request successfully at c={clients} ({result.errors} errors)"
            )
        load = f"c={clients}"
        measured.rows.append(result_row(model, system, load, result))
        measured.closed[(model, system, clients)] = result
        if triton_row := _triton_row(model, system, load, view, triton_model):
            measured.triton_rows.append(triton_row)
        if cpu_columns := cpu.columns(result.throughput):
            base = {"model": model, "system": system, "load": load, "throughput_per_s": result.throughput}
            measured.cpu_rows.append(base | cpu_columns)
        logger.info("%s %s %s: %.1f/s, p99 %.1f ms", model, system, load, result.throughput, result.p99_ms)

    saturation = max(r.throughput for (m, s, _), r in measured.closed.items() if (m, s) == (model, system))
    for fraction in shape.fractions:
        rate = fraction * saturation
        with _maybe_watch(triton_grpc_url) as view:
            result = run_open_loop_sync(
                url,
                bodies,
                rate_per_s=rate,
                duration_s=shape.duration_s,
                warmup_s=shape.warmup_s,
                max_connections=OPEN_LOOP_CONNECTIONS,
                content_type=content_type,
            )
        load = f"open {fraction:.0%} ({rate:.1f}/s)"
        measured.rows.append(result_row(model, system, load, result))
        measured.open[(model, system, fraction)] = result
        if triton_row := _triton_row(model, system, load, view, triton_model):
            measured.triton_rows.append(triton_row)
        logger.info("%s %s %s: p50 %.1f ms, p99 %.1f ms", model, system, load, result.p50_ms, result.p99_ms)
    return measured


def write_plots(
    measured: Measurements,
    folder: Path,
    prefix: str,
    *,
    unit: str = "requests/s",
    limits: dict[tuple[str, str], float] | None = None,
) -> list[Path]:
    """PNG plots per model: throughput against concurrency (with `limits`, (model, label) ->
    throughput, drawn flat), closed-loop latency at the highest concurrency, open-loop latency at
    each fraction, and p50/p99 against offered load."""
    from load_tests.plots import plot_latency_distribution, plot_throughput_vs_concurrency

    paths = []
    models = sorted({m for m, _, _ in measured.closed} | {m for m, _, _ in measured.open})
    for model in models:
        slug = f"{prefix}-{model}".replace(" ", "_").replace("/", "_")
        closed = {(s, c): r for (m, s, c), r in measured.closed.items() if m == model}
        if closed:
            counts = sorted({c for _, c in closed})
            rows = [
                {"system": s, "concurrency": c, "throughput": r.throughput} for (s, c), r in closed.items()
            ]
            for (limit_model, label), value in (limits or {}).items():
                if limit_model == model:
                    rows += [{"system": label, "concurrency": c, "throughput": value} for c in counts]
            paths.append(
                plot_throughput_vs_concurrency(
                    rows,
                    folder / f"{slug}-throughput.png",
                    y_label=unit,
                    title=f"{model}: throughput against concurrency (closed loop)",
                )
            )
            top = max(counts)
            paths.append(
                plot_latency_distribution(
                    {s: r.latencies_ms for (s, c), r in closed.items() if c == top},
                    folder / f"{slug}-latency-c{top}.png",
                    title=f"{model}: latency at c={top} (closed loop)",
                )
            )
        opened = {(s, f): r for (m, s, f), r in measured.open.items() if m == model}
        for system in dict.fromkeys(s for s, _ in opened):  # one plot per system: four lines each
            paths.append(
                plot_latency_distribution(
                    {f"{f:.0%} of saturation": r.latencies_ms for (s, f), r in opened.items() if s == system},
                    folder / f"{slug}-{_slug(system)}-latency-open.png",
                    title=f"{model}, {system}: latency from due time (open loop)",
                )
            )
        if opened:
            rows = []
            for (system, _), result in opened.items():
                assert result.offered_rps is not None
                rows.append({"system": f"{system} p50", "offered": result.offered_rps, "ms": result.p50_ms})
                rows.append({"system": f"{system} p99", "offered": result.offered_rps, "ms": result.p99_ms})
            paths.append(
                plot_throughput_vs_concurrency(
                    [row for row in rows if row["ms"] == row["ms"]],  # NaN: nothing answered
                    folder / f"{slug}-latency-vs-load.png",
                    x_key="offered",
                    y_key="ms",
                    y_label="latency (ms)",
                    title=f"{model}: latency against offered load (open loop)",
                )
            )
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]


def markdown_images(paths: Sequence[Path], relative_to: Path) -> str:
    """Markdown image links for the report, relative to the report's folder."""
    return "\n".join(f"![{p.stem}]({p.relative_to(relative_to)})" for p in paths) + ("\n" if paths else "")
