"""The soak test behind `samo soak`: a mixed workload at 70 % of the highest sustainable rate for a long
time, watching errors, latency and the memory of every serving process.

1. Rate search (unless a rate is given): open-loop steps at rising rates (`SEARCH_STEP_S` each); a step
   is sustained when it has no errors and its p95 stays under `slo_p95_ms` (arrivals do not wait for
   answers, so a stack that falls behind shows it in latency). The highest sustained step is the
   sustainable rate.
2. Soak: Poisson arrivals at `load_fraction` x that rate for `duration_s`, every `sample_every_s` a row:
   requests, errors, latency percentiles, and the RSS of the gateway process(es) and of every Triton
   process (tritonserver and each Python-backend stub, by model).
   A warm-up at the soak rate comes first (`warmup_s`): allocators, Triton's batch shapes and the stubs'
   caches grow during the first minutes (measured: the whisper stub's low-water mark settles after
   about 3 minutes), and that is not a leak. Its samples are kept in the CSV, marked, and left out of
   the growth figures.
3. Report: growth of each process's RSS and of p95 latency between the first and the last minute of the
   measured soak (mean of their samples), and the least-squares trend of each over the measured soak,
   written as `soak.md`, `samples.csv`, `rate-search.csv` in the output folder.

Processes are found with psutil: the gateway is whatever listens on the HTTP port (with its worker
processes); Triton is every `tritonserver` among the gateway's descendants (`samo serve`) or in its
process group, or the one given, and its children are the stubs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import os
import random
import time
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
import psutil

from gateway.grpc_api import samo_v1_pb2 as pb
from gateway.grpc_api import samo_v1_pb2_grpc
from load_tests.texts import journal_texts

logger = logging.getLogger(__name__)

JFK_WAV = Path(__file__).resolve().parent.parent / "tests" / "data" / "jfk.wav"
SEARCH_STEP_S = 20.0
SEARCH_START_RATE = 2.0
SEARCH_GROWTH = 1.5
REQUEST_TIMEOUT_S = 120.0
WINDOW_S = 60.0
"""First and last window compared for growth, seconds."""


@dataclass(frozen=True)
class SoakOptions:
    http_url: str
    grpc_target: str | None = None
    """The gateway's gRPC address; without it the workload is HTTP only."""
    duration_s: float = 600.0
    rate: float | None = None
    """Requests per second for the soak itself; None: `load_fraction` of the rate found by the search."""
    load_fraction: float = 0.7
    sample_every_s: float = 5.0
    warmup_s: float = 180.0
    """Seconds at the soak rate before the measured `duration_s`; sampled but not counted in growth."""
    slo_p95_ms: float = 2000.0
    max_search_rate: float = 400.0
    api_key: str | None = None
    triton_pid: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Operation:
    name: str
    weight: float
    send: Callable[[Clients], Awaitable[None]]
    """Sends one request; raises on any answer but success."""


@dataclass
class Clients:
    http: httpx.AsyncClient
    grpc: samo_v1_pb2_grpc.SamoStub | None
    metadata: tuple[tuple[str, str], ...]


class RequestFailed(Exception):
    pass


def _clip(seconds: float, offset: float) -> bytes:
    """`seconds` of the JFK recording from `offset`, as a WAV file."""
    with wave.open(str(JFK_WAV)) as source:
        rate = source.getframerate()
        source.setpos(int(offset * rate))
        frames = source.readframes(int(seconds * rate))
        out = io.BytesIO()
        with wave.open(out, "wb") as clip:
            clip.setnchannels(1)
            clip.setsampwidth(2)
            clip.setframerate(rate)
            clip.writeframes(frames)
    return out.getvalue()


def workload(seed: int = 0, with_grpc: bool = True) -> list[Operation]:
    """The product's mix: mostly text (emotions, journal entries, summaries), some audio, over HTTP and
    (`with_grpc`) gRPC."""
    texts = journal_texts(256, seed)
    clips = [_clip(3.0, 0.0), _clip(4.0, 3.0), _clip(4.5, 6.5)]
    rng = random.Random(seed)

    async def http(clients: Clients, route: str, **kwargs: Any) -> None:
        response = await clients.http.post(route, **kwargs)
        if response.status_code != 200:
            raise RequestFailed(f"{route} {response.status_code}")

    async def rpc(clients: Clients, method: str, request: Any) -> None:
        assert clients.grpc is not None
        try:
            await getattr(clients.grpc, method)(request, timeout=REQUEST_TIMEOUT_S, metadata=clients.metadata)
        except grpc.RpcError as error:
            raise RequestFailed(f"{method} {error.code().name}") from None

    def pick(items: Sequence[Any]) -> Any:
        return items[rng.randrange(len(items))]

    operations = [
        Operation(
            "http emotions", 30, lambda c: http(c, "/v1/emotions", json={"texts": [pick(texts), pick(texts)]})
        ),
        Operation(
            "grpc emotions",
            20,
            lambda c: rpc(c, "DetectEmotions", pb.DetectEmotionsRequest(texts=[pick(texts)])),
        ),
        Operation("http journal text", 15, lambda c: http(c, "/v1/journal", json={"text": pick(texts)})),
        Operation(
            "grpc journal text",
            10,
            lambda c: rpc(c, "AnalyzeJournal", pb.AnalyzeJournalRequest(text=pick(texts))),
        ),
        Operation(
            "http summarize", 10, lambda c: http(c, "/v1/summarize", json={"texts": [" ".join(texts[:6])]})
        ),
        Operation(
            "http transcribe",
            3,
            lambda c: http(
                c, "/v1/transcribe", files={"file": ("clip.wav", pick(clips))}, data={"beam_size": "1"}
            ),
        ),
        Operation(
            "grpc transcribe",
            2,
            lambda c: rpc(c, "Transcribe", pb.TranscribeRequest(audio=pick(clips), beam_size=1)),
        ),
    ]
    return [op for op in operations if with_grpc or not op.name.startswith("grpc")]


@dataclass
class _Window:
    """What finished since the last sample."""

    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


class _Runner:
    """Open-loop sender: Poisson arrivals, each a weighted random operation, never waiting for answers."""

    def __init__(self, operations: list[Operation], clients: Clients, seed: int) -> None:
        self.operations = operations
        self.clients = clients
        self.weights = np.array([op.weight for op in operations], dtype=float)
        self.weights /= self.weights.sum()
        self.rng = np.random.default_rng(seed)
        self.window = _Window()
        self.in_flight: set[asyncio.Task[None]] = set()

    def take_window(self) -> _Window:
        window, self.window = self.window, _Window()
        return window

    async def _one(self, operation: Operation) -> None:
        start = time.perf_counter()
        try:
            await operation.send(self.clients)
        except (RequestFailed, httpx.HTTPError, OSError) as error:
            self.window.errors += 1
            kind = str(error) or type(error).__name__
            self.window.error_kinds[kind] = self.window.error_kinds.get(kind, 0) + 1
            return
        self.window.latencies_ms.append((time.perf_counter() - start) * 1000)

    async def run(self, rate: float, duration_s: float) -> None:
        end = time.perf_counter() + duration_s
        due = time.perf_counter()
        while True:
            due += self.rng.exponential(1.0 / rate)
            if due >= end:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            operation = self.operations[self.rng.choice(len(self.operations), p=self.weights)]
            self.window.sent += 1
            task = asyncio.create_task(self._one(operation))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def drain(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=timeout_s)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


# --- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingProcesses:
    gateway: tuple[psutil.Process, ...]
    triton: psutil.Process | None

    def rss_mb(self) -> dict[str, float]:
        """RSS in MB: `gateway` (all its processes), `tritonserver`, and `stub:<model>` for each stub."""
        rss: dict[str, float] = {"gateway": 0.0}
        for process in self.gateway:
            rss["gateway"] += _rss(process)
        if self.triton is not None:
            rss["tritonserver"] = _rss(self.triton)
            try:
                stubs = self.triton.children()
            except psutil.Error:
                stubs = []
            for stub in stubs:
                name = f"stub:{_stub_model(stub)}"
                rss[name] = rss.get(name, 0.0) + _rss(stub)
        return rss


def _rss(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / (1 << 20)
    except psutil.Error:
        return math.nan


def _stub_model(stub: psutil.Process) -> str:
    """The model a Python-backend stub serves, from its `<repository>/<model>/<version>/model.py` argument."""
    try:
        for argument in stub.cmdline():
            if argument.endswith("model.py"):
                return Path(argument).parent.parent.name
    except psutil.Error:
        pass
    return str(stub.pid)


def find_processes(http_url: str, triton_pid: int | None = None) -> ServingProcesses:
    """The gateway: the process listening on the URL's port, with its children that are not Triton
    (workers). Triton: `triton_pid`, else a `tritonserver` among the gateway's descendants or in its
    process group."""
    port = urlsplit(http_url).port or 80
    try:
        connections = psutil.net_connections("tcp")
    except psutil.AccessDenied:
        raise RuntimeError("reading which process listens on the port needs more rights here") from None
    listeners = {
        c.pid
        for c in connections
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
    if not listeners:
        raise RuntimeError(f"no local process listens on port {port}: run the soak on the gateway's machine")
    # With `--workers`, every worker (and the supervisor) holds the port.
    gateway = [psutil.Process(pid) for pid in sorted(listeners)]
    triton = psutil.Process(triton_pid) if triton_pid else None
    if triton is None:
        candidates = [c for p in gateway for c in p.children(recursive=True) if c.name() == "tritonserver"]
        if not candidates:
            group = {_pgid(p) for p in gateway}
            candidates = [
                p
                for p in psutil.process_iter(["name"])
                if p.info["name"] == "tritonserver" and _pgid(p) in group
            ]
        triton = candidates[0] if candidates else None
    if triton is None:
        logger.warning(
            "no tritonserver process found: only the gateway's memory is followed (use --triton-pid)"
        )
    return ServingProcesses(tuple(gateway), triton)


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchStep:
    offered_rate: float
    completed_rate: float
    errors: int
    p95_ms: float
    sustained: bool


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_mb: dict[str, float]
    warmup: bool = False


async def _open_clients(options: SoakOptions) -> tuple[Clients, grpc.aio.Channel | None]:
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    http = httpx.AsyncClient(
        base_url=options.http_url, timeout=REQUEST_TIMEOUT_S, headers=headers, limits=limits
    )
    channel = grpc.aio.insecure_channel(options.grpc_target) if options.grpc_target else None
    stub = samo_v1_pb2_grpc.SamoStub(channel) if channel is not None else None
    metadata = (("authorization", f"Bearer {options.api_key}"),) if options.api_key else ()
    return Clients(http, stub, metadata), channel


async def search_rate(runner: _Runner, options: SoakOptions) -> tuple[float, list[SearchStep]]:
    """The highest sustained rate of the steps (see the module docstring); at least the first step's."""
    steps: list[SearchStep] = []
    rate = SEARCH_START_RATE
    best = SEARCH_START_RATE
    while rate <= options.max_search_rate:
        runner.take_window()
        await runner.run(rate, SEARCH_STEP_S)
        await runner.drain()
        window = runner.take_window()
        completed = len(window.latencies_ms) / SEARCH_STEP_S
        p95 = _percentile(window.latencies_ms, 95)
        # Open loop: a stack that falls behind queues the arrivals, and their latency shows it.
        sustained = window.errors == 0 and p95 <= options.slo_p95_ms
        steps.append(SearchStep(rate, completed, window.errors, p95, sustained))
        logger.info(
            "search: %.1f req/s offered, %.1f done, %d errors, p95 %.0f ms",
            rate,
            completed,
            window.errors,
            p95,
        )
        if not sustained:
            break
        best = rate
        rate = round(rate * SEARCH_GROWTH, 1)
    return best, steps


async def soak(
    options: SoakOptions,
) -> tuple[float | None, float, list[SearchStep], list[Sample], dict[str, int]]:
    """(sustainable rate or None when given, soak rate, search steps, samples, errors by kind)."""
    processes = find_processes(options.http_url, options.triton_pid)
    clients, channel = await _open_clients(options)
    runner = _Runner(workload(options.seed, with_grpc=clients.grpc is not None), clients, options.seed)
    try:
        sustainable: float | None = None
        steps: list[SearchStep] = []
        if options.rate:
            rate = options.rate
        else:
            sustainable, steps = await search_rate(runner, options)
            rate = options.load_fraction * sustainable
        logger.info(
            "soak: %.1f req/s, %.0f s warm-up then %.0f s measured",
            rate,
            options.warmup_s,
            options.duration_s,
        )
        runner.take_window()
        samples: list[Sample] = []
        errors: dict[str, int] = {}
        start = time.perf_counter()
        sending = asyncio.create_task(runner.run(rate, options.warmup_s + options.duration_s))
        while not sending.done():
            await asyncio.wait({sending}, timeout=options.sample_every_s)
            window = runner.take_window()
            for kind, count in window.error_kinds.items():
                errors[kind] = errors.get(kind, 0) + count
            latencies = window.latencies_ms
            elapsed = time.perf_counter() - start
            samples.append(
                Sample(
                    elapsed_s=round(elapsed - options.warmup_s, 1),
                    requests=len(latencies) + window.errors,
                    errors=window.errors,
                    p50_ms=_percentile(latencies, 50),
                    p95_ms=_percentile(latencies, 95),
                    p99_ms=_percentile(latencies, 99),
                    rss_mb=processes.rss_mb(),
                    warmup=elapsed <= options.warmup_s,
                )
            )
        await runner.drain()
        return sustainable, rate, steps, samples, errors
    finally:
        await clients.http.aclose()
        if channel is not None:
            await channel.close()


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    what: str
    first: float
    last: float
    trend_per_10_min: float
    """Least-squares slope over the measured soak, in the row's unit per 10 minutes."""

    @property
    def percent(self) -> float:
        return (self.last - self.first) / self.first * 100 if self.first else math.nan


def growth(samples: Sequence[Sample], window_s: float = WINDOW_S) -> list[Growth]:
    """Mean of each process's RSS and of p95 latency in the first vs the last `window_s` of the measured
    samples (warm-up left out), with each one's linear trend."""
    measured = [s for s in samples if not s.warmup]
    if not measured:
        return []
    start, end = measured[0].elapsed_s, measured[-1].elapsed_s
    first = [s for s in measured if s.elapsed_s <= start + window_s]
    last = [s for s in measured if s.elapsed_s > end - window_s]
    names = sorted({name for s in measured for name in s.rss_mb})

    def mean(rows: Sequence[Sample], value: Callable[[Sample], float]) -> float:
        values = [v for v in map(value, rows) if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def trend(value: Callable[[Sample], float]) -> float:
        points = [(s.elapsed_s, v) for s in measured if not math.isnan(v := value(s))]
        if len(points) < 2 or points[0][0] == points[-1][0]:
            return math.nan
        x, y = np.array(points).T
        return float(np.polyfit(x, y, 1)[0]) * 600

    values: list[tuple[str, Callable[[Sample], float]]] = [
        (f"RSS {name} (MB)", lambda s, n=name: s.rss_mb.get(n, math.nan)) for name in names
    ]
    values.append(("p95 latency (ms)", lambda s: s.p95_ms))
    return [Growth(what, mean(first, value), mean(last, value), trend(value)) for what, value in values]


def write_report(
    out: Path,
    options: SoakOptions,
    result: tuple[float | None, float, list[SearchStep], list[Sample], dict[str, int]],
    limit_percent: float = 5.0,
) -> Path:
    """`soak.md`, `samples.csv` and (after a search) `rate-search.csv` in `out`; the markdown's path."""
    sustainable, rate, steps, samples, errors = result
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({name for s in samples for name in s.rss_mb})
    with (out / "samples.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "elapsed_s",
                "warmup",
                "requests",
                "errors",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                *[f"rss_mb:{n}" for n in names],
            ]
        )
        for s in samples:
            writer.writerow([s.elapsed_s, s.warmup, s.requests, s.errors, *(f"{v:.1f}" for v in (s.p50_ms, s.p95_ms, s.p99_ms)),
                             *(f"{s.rss_mb.get(n, math.nan):.1f}" for n in names)])  # fmt: skip
    if steps:
        with (out / "rate-search.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["offered_rate", "completed_rate", "errors", "p95_ms", "sustained"])
            for step in steps:
                writer.writerow(
                    [
                        step.offered_rate,
                        f"{step.completed_rate:.1f}",
                        step.errors,
                        f"{step.p95_ms:.0f}",
                        step.sustained,
                    ]
                )
    measured = [s for s in samples if not s.warmup]
    total = sum(s.requests for s in measured)
    failed = sum(s.errors for s in measured)
    warmup_failed = sum(s.errors for s in samples if s.warmup)
    all_ms = [s.p95_ms for s in measured if not math.isnan(s.p95_ms)]
    lines = [
        "# Soak",
        "",
        f"- gateway: {options.http_url}"
        + (f", gRPC {options.grpc_target}" if options.grpc_target else " (HTTP only)"),
        f"- sustainable rate: {sustainable:.1f} req/s (no errors, p95 under {options.slo_p95_ms:.0f} ms)"
        if sustainable is not None
        else "- rate given, no search",
        f"- soak: {rate:.1f} req/s, {options.warmup_s:.0f} s warm-up (not counted below, "
        f"{warmup_failed} errors) then {options.duration_s:.0f} s measured, a sample every {options.sample_every_s:.0f} s",
        f"- requests measured: {total}, errors: {failed} ({failed / total * 100 if total else 0:.2f} %)"
        + (f"; by kind, warm-up included: {errors}" if errors else ""),
        f"- p95 per sample: median {np.median(all_ms) if all_ms else math.nan:.0f} ms, worst {max(all_ms, default=math.nan):.0f} ms",
        "",
        f"| what | first {WINDOW_S:.0f} s | last {WINDOW_S:.0f} s | growth | under {limit_percent:.0f} % | trend per 10 min |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in growth(samples):
        verdict = "yes" if row.percent < limit_percent else "**no**"
        lines.append(
            f"| {row.what} | {row.first:.1f} | {row.last:.1f} | {row.percent:+.1f} % | {verdict} | {row.trend_per_10_min:+.1f} |"
        )
    if steps:
        lines += [
            "",
            "Rate search:",
            "",
            "| offered req/s | completed req/s | errors | p95 ms | sustained |",
            "| ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {s.offered_rate:.1f} | {s.completed_rate:.1f} | {s.errors} | {s.p95_ms:.0f} | {'yes' if s.sustained else 'no'} |"
            for s in steps
        ]
    path = out / "soak.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_soak(options: SoakOptions, out: Path) -> Path:
    """The whole soak, then its report in `out`."""
    return write_report(out, options, asyncio.run(soak(options)))
