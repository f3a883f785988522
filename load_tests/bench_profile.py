"""`samo bench profile-gateway`: where the gateway's time goes per request, sampled with py-spy.

The stack as `samo bench emotion` runs it (MiniLM zero-shot by default, where the gateway's own cost
per request is what limits throughput), a closed loop at `concurrency`, and py-spy sampling the gateway
process from outside (no code changes, no restart) twice: once as collapsed stacks, summarized here as
the functions with the most samples (self and inclusive), once as a flame graph (SVG). py-spy needs
ptrace permission over the gateway (root, or `CAP_SYS_PTRACE` in a container).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from load_tests.bench_emotion import prepare, request_bodies
from load_tests.bench_overhead import GRPC_METHOD, grpc_bodies
from load_tests.grpc_load import run_grpc_load
from load_tests.loadgen import format_table, run_load_sync
from load_tests.processes import gateway_stack
from load_tests.texts import journal_texts

logger = logging.getLogger(__name__)

_LINE_NUMBER = re.compile(r":\d+\)$")
TOP = 25
# Frames of the project's own code, as py-spy names them (paths relative to the working directory).
PROJECT_MARKERS = ("(gateway/", "(samo/")
GRPC_CLIENTS = 2
"""Client processes for the gRPC load (one Python process cannot drive the gateway)."""


@dataclass(frozen=True)
class ProfileOptions:
    model: str = "minilm-zero-shot"
    quantize: str = "int8"
    concurrency: int = 32
    duration_s: float = 20.0
    rate_hz: int = 200
    transport: Literal["http", "grpc"] = "http"
    output_dir: Path = Path("load_tests/results")


def py_spy() -> str:
    """py-spy next to this interpreter (the virtualenv's bin/, often not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: `pip install py-spy` (the load extra has it)")
    return found


def record(
    pid: int,
    seconds: float,
    rate_hz: int,
    output: Path,
    fmt: str,
    *,
    subprocesses: bool = True,
    idle: bool = False,
) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (and, `subprocesses`, its worker processes) for `seconds`; `idle` keeps the
    samples of threads that wait. Returns the running py-spy."""
    command = [py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate_hz)]
    command += ["--nonblocking", "--format", fmt, "--output", str(output)]
    command += ["--subprocesses"] * subprocesses + ["--idle"] * idle
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(collapsed: str) -> tuple[list[dict], list[dict], int]:
    """From py-spy's collapsed stacks (`frame;frame;... count` per line), line numbers merged: the
    functions with the most samples of their own (self), and the project's own functions (`gateway/`,
    `samo/`) by samples anywhere in their stack (inclusive: where the gateway's time goes)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def row(name: str) -> dict[str, object]:
        return {
            "function": name,
            "self_pct": 100 * own[name] / total,
            "inclusive_pct": 100 * inclusive[name] / total,
        }

    by_self = [row(name) for name, _ in own.most_common(TOP)]
    project = [name for name, _ in inclusive.most_common() if any(m in name for m in PROJECT_MARKERS)]
    return by_self, [row(name) for name in project[:TOP]], total


@dataclass(frozen=True)
class Sampled:
    """The load while py-spy sampled."""

    throughput: float
    p50_ms: float


Drive = Callable[[float], Sampled]
"""Runs the load for that many seconds."""


def _http_load(url: str, bodies: list[bytes], concurrency: int) -> Drive:
    def drive(seconds: float) -> Sampled:
        result = run_load_sync(url, bodies, concurrency=concurrency, duration_s=seconds, warmup_s=0.0)
        return Sampled(result.throughput, result.p50_ms)

    return drive


def _grpc_load(target: str, bodies: list[bytes], concurrency: int) -> Drive:
    def drive(seconds: float) -> Sampled:
        result = run_grpc_load(
            target, GRPC_METHOD, bodies, concurrency=concurrency, duration_s=seconds, processes=GRPC_CLIENTS
        )
        return Sampled(result.throughput, result.percentile_ms(50))

    return drive


def _profiled_run(pid: int, drive: Drive, options: ProfileOptions, output: Path, fmt: str) -> Sampled:
    results: list[Sampled] = []
    load = threading.Thread(target=lambda: results.append(drive(options.duration_s)))
    load.start()
    spy = record(pid, options.duration_s, options.rate_hz, output, fmt)
    _, errors = spy.communicate(timeout=options.duration_s + 60)
    load.join()
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {errors.decode(errors='replace')[-500:]}")
    return results[0]


def run_profile(options: ProfileOptions) -> str:
    py_spy()  # fail before the export, not after it
    texts = journal_texts()
    options.output_dir.mkdir(parents=True, exist_ok=True)
    slug = f"profile-gateway-{options.model}-{options.quantize}" + (
        "-grpc" if options.transport == "grpc" else ""
    )
    svg = options.output_dir / "plots" / f"{slug}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="samo-profile-") as workdir:
        model = prepare(options.model, Path(workdir), options.quantize, fp32_reference=False)  # type: ignore[arg-type]
        collapsed = Path(workdir) / "stacks.txt"
        with gateway_stack(model.repository) as stack:
            if options.transport == "grpc":
                drive = _grpc_load(stack.gateway_grpc_target, grpc_bodies(texts), options.concurrency)
            else:
                drive = _http_load(
                    f"{stack.gateway_url}/v1/emotions", request_bodies(texts), options.concurrency
                )
            drive(2.0)  # warm-up
            sampled = _profiled_run(stack.gateway_pid, drive, options, collapsed, "raw")
            _profiled_run(stack.gateway_pid, drive, options, svg, "flamegraph")
        by_self, project, samples = summarize(collapsed.read_text())
    report = (
        f"# Gateway profile\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; `samo bench profile-gateway`: "
        f"{options.model} ({options.quantize}) behind the gateway, {options.transport}, closed loop "
        f"c={options.concurrency}, "
        f"{options.duration_s:.0f} s sampled by py-spy at {options.rate_hz} Hz ({samples} samples of the "
        f"gateway's threads). While sampled: {sampled.throughput:.1f} requests/s, p50 {sampled.p50_ms:.1f} ms "
        f"(py-spy's sampling slows the gateway a little). Flame graph: `plots/{svg.name}`.\n\n"
        + "## Most samples of their own\n\n"
        + format_table(by_self, ("function", "self_pct", "inclusive_pct"))
        + "\n## The gateway's own functions, by samples in their stack\n\n"
        + format_table(project, ("function", "self_pct", "inclusive_pct"))
    )
    (options.output_dir / f"{slug}.md").write_text(report)
    return report
