"""`samo bench overhead`: what the stack itself costs per text, with a model that costs nearly nothing.

The near-free classifier (one layer, hidden 32, MiniLM's tokenizer and 28 labels) served as `make
serve` serves a model: gateway + Triton. With the model's compute near zero, the CPU that the gateway,
tritonserver and its Python stubs spend per answered text is the stack's serving overhead, the figure
that decides whether the gateway can feed a GPU (issue 20: at most 0.35 ms per text over HTTP and
0.25 ms over gRPC at c=256, all processes but the load generator together).

One text per request. Closed loop over HTTP from wrk (compiled, one thread) and over gRPC from
several client processes (raw bytes, no parsing), at each concurrency; then an open loop over HTTP
(Poisson arrivals from the Python generator) at half the best closed-loop rate. Each row gives the
CPU milliseconds per text of every part, the load generator's included, so that a row whose
generator took the cores shows it.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.grpc_api import samo_v1_pb2 as pb
from load_tests.bench_emotion import prepare, request_bodies
from load_tests.bench_report import OPEN_LOOP_CONNECTIONS
from load_tests.cpu_use import PARTS, CpuUse, StackProcesses, cpu_use
from load_tests.grpc_load import run_grpc_load
from load_tests.loadgen import format_table, run_open_loop_sync
from load_tests.processes import RunningStack, gateway_stack
from load_tests.texts import journal_texts
from load_tests.wrk import run_wrk
from samo.cpus import usable_cores

logger = logging.getLogger(__name__)

MODEL = "near-free"
GRPC_METHOD = "/samo.v1.Samo/DetectEmotions"
TARGET_MS = {"http": 0.35, "grpc": 0.25}
"""Issue 20's targets: stack CPU per text at the highest concurrency."""
STACK_PARTS = ("gateway", "tritonserver", "stubs")
COLUMNS = (
    "gateway",
    "transport",
    "load",
    "texts_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "cpu_ms_stack",
    *(f"cpu_ms_{part.replace(' ', '_')}" for part in PARTS),
    "cores_busy",
)


@dataclass(frozen=True)
class OverheadOptions:
    concurrency: tuple[int, ...] = (1, 32, 256)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    grpc_clients: int = 2
    """Client processes for the gRPC rows (one Python process cannot drive c=256)."""
    open_loop_fraction: float = 0.5
    """The open-loop row's rate, as a fraction of the best closed-loop HTTP rate; 0 skips it."""
    settings: tuple[tuple[str, str], ...] = ()
    """More `SAMO_*` settings for the gateway (e.g. SAMO_WORKERS, SAMO_COALESCE_IN_FLIGHT)."""
    compare: tuple[tuple[str, str], ...] = ()
    """Settings measured one at a time after the run with `settings`, in the same run (a stack each):
    one more set of rows per setting, e.g. SAMO_HTTP_SERVER=granian against uvicorn."""
    output_dir: Path = Path("load_tests/results")


@dataclass(frozen=True)
class _Measured:
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _row(transport: str, load: str, measured: _Measured, cpu: CpuUse) -> dict[str, object]:
    row: dict[str, object] = {
        "transport": transport,
        "load": load,
        "texts_per_s": measured.texts_per_s,
        "p50_ms": measured.p50_ms,
        "p99_ms": measured.p99_ms,
        "errors": measured.errors,
    }
    columns = cpu.columns(measured.texts_per_s)
    if columns:
        row["cpu_ms_stack"] = sum(float(columns[f"cpu_ms_{part}"]) for part in STACK_PARTS)  # type: ignore[arg-type]
        row |= columns
    return row


def grpc_bodies(texts: list[str]) -> list[bytes]:
    return [pb.DetectEmotionsRequest(texts=[text]).SerializeToString() for text in texts]


def _measure(
    stack: RunningStack, run: Callable[[float], _Measured], options: OverheadOptions
) -> tuple[_Measured, CpuUse]:
    run(options.warmup_s)
    with cpu_use(StackProcesses(stack.gateway_pid, stack.triton_pid)) as cpu:
        measured = run(options.duration_s)
    return measured, cpu


def measure_overhead(
    stack: RunningStack, texts: list[str], options: OverheadOptions
) -> list[dict[str, object]]:
    http_url = f"{stack.gateway_url}/v1/emotions"
    http, grpc = request_bodies(texts), grpc_bodies(texts)
    rows = []
    for clients in options.concurrency:

        def over_http(seconds: float, clients: int = clients) -> _Measured:
            result = run_wrk(http_url, http, concurrency=clients, duration_s=seconds)
            return _Measured(result.throughput, result.p50_ms, result.p99_ms, result.errors)

        def over_grpc(seconds: float, clients: int = clients) -> _Measured:
            result = run_grpc_load(
                stack.gateway_grpc_target,
                GRPC_METHOD,
                grpc,
                concurrency=clients,
                duration_s=seconds,
                processes=options.grpc_clients,
            )
            return _Measured(
                result.throughput, result.percentile_ms(50), result.percentile_ms(99), result.errors
            )

        for transport, run in (("http", over_http), ("grpc", over_grpc)):
            measured, cpu = _measure(stack, run, options)
            rows.append(_row(transport, f"c={clients}", measured, cpu))
            logger.info("%s c=%d: %.0f texts/s", transport, clients, measured.texts_per_s)
    if options.open_loop_fraction > 0:
        best = max(float(r["texts_per_s"]) for r in rows if r["transport"] == "http")  # type: ignore[arg-type]
        rate = best * options.open_loop_fraction

        def open_loop(seconds: float) -> _Measured:
            result = run_open_loop_sync(
                http_url,
                http,
                rate_per_s=rate,
                duration_s=seconds,
                warmup_s=0,
                max_connections=OPEN_LOOP_CONNECTIONS,
            )
            return _Measured(
                result.throughput, result.p50_ms, result.p99_ms, result.errors + result.unfinished
            )

        measured, cpu = _measure(stack, open_loop, options)
        rows.append(_row("http", f"open {options.open_loop_fraction:.0%} ({rate:.0f}/s)", measured, cpu))
    return rows


def verdicts(rows: list[dict[str, object]], top: int) -> list[str]:
    lines = []
    for gateway in dict.fromkeys(r["gateway"] for r in rows):
        for transport, target in TARGET_MS.items():
            row = next(
                (
                    r
                    for r in rows
                    if (r["gateway"], r["transport"], r["load"]) == (gateway, transport, f"c={top}")
                ),
                None,
            )
            if row is None or "cpu_ms_stack" not in row:
                continue
            cost = float(row["cpu_ms_stack"])  # type: ignore[arg-type]
            met = "met" if cost <= target else f"missed by {cost - target:.2f} ms"
            lines.append(
                f"- {gateway}, {transport} at c={top}: the stack spends {cost:.2f} ms of CPU per text "
                f"(target {target} ms: {met}); {row['texts_per_s']:.0f} texts/s"
            )
    return lines


def gateway_variants(options: OverheadOptions) -> list[tuple[str, dict[str, str]]]:
    """(label, settings): the run's own settings, then each compared setting on top of them."""
    base = dict(options.settings)
    variants = [(", ".join(f"{k}={v}" for k, v in base.items()) or "defaults", base)]
    return variants + [(f"{name}={value}", base | {name: value}) for name, value in options.compare]


def run_overhead(options: OverheadOptions) -> str:
    texts = journal_texts()
    variants = gateway_variants(options)
    rows = []
    with tempfile.TemporaryDirectory(prefix="samo-overhead-") as workdir:
        model = prepare(MODEL, Path(workdir), "none")
        for label, settings in variants:
            with gateway_stack(model.repository, settings=settings) as stack:
                rows += [{"gateway": label, **row} for row in measure_overhead(stack, texts, options)]
    top = max(options.concurrency)
    described = "; ".join(label for label, _ in variants)
    report = (
        f"# Serving overhead\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {usable_cores()} usable cores. The near-free "
        f"classifier (one layer, hidden 32) behind gateway + Triton, gateway settings: {described}. One "
        f"text per request, {len(texts)} journal texts; {options.duration_s:g} s per row after "
        f"{options.warmup_s:g} s warm-up. HTTP closed loop from wrk (one thread), gRPC from "
        f"{options.grpc_clients} client processes; open loop from the Python generator. cpu_ms_*: CPU "
        "milliseconds per answered text; stack = gateway + tritonserver + stubs.\n\n"
        + format_table(rows, COLUMNS)
        + "\n"
        + "\n".join(verdicts(rows, top))
        + "\n"
    )
    options.output_dir.mkdir(parents=True, exist_ok=True)
    (options.output_dir / "overhead.md").write_text(report)
    (options.output_dir / "overhead.json").write_text(json.dumps(rows, indent=1))
    return report
