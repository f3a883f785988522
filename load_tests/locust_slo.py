"""Step-load results: each step's offered rate, what was achieved, its percentiles, and the SLO verdict.

A step passes when every request succeeded, p99 stayed at or under the SLO and the users achieved at
least `MIN_ACHIEVED` of the offered rate (Locust's users are closed loop: a server that cannot keep up
lowers the rate it is offered, so a step whose rate was not reached did not test that rate). Each
step's rate is sent by paced users (Locust's constant_throughput) at the same rate each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MIN_ACHIEVED = 0.9


@dataclass(frozen=True)
class StepResult:
    step: int
    offered_rps: float
    users: int
    achieved_rps: float
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    passed: bool
    reason: str


def judge_step(
    step: int,
    offered_rps: float,
    users: int,
    latencies_ms: Sequence[float],
    failures: int,
    measured_s: float,
    slo_p99_ms: float,
) -> StepResult:
    """One step's figures from the latencies of the requests answered in its measured window."""
    values = np.asarray(latencies_ms, dtype=float)
    requests = int(values.size)
    p50, p95, p99 = (float(np.percentile(values, q)) for q in (50, 95, 99)) if requests else (0.0,) * 3
    achieved = requests / measured_s if measured_s > 0 else 0.0
    if not requests:
        reason = "no request was answered"
    elif failures:
        reason = f"{failures} of {requests} requests failed"
    elif p99 > slo_p99_ms:
        reason = f"p99 {p99:.0f} ms over the SLO of {slo_p99_ms:g} ms"
    # A paced user sends floor or ceil of rate x window requests in a window: allow each user one less.
    elif requests + users < MIN_ACHIEVED * offered_rps * measured_s:
        reason = f"reached only {achieved:.1f} of {offered_rps:g} requests/s"
    else:
        reason = ""
    return StepResult(
        step=step,
        offered_rps=offered_rps,
        users=users,
        achieved_rps=round(achieved, 2),
        requests=requests,
        failures=failures,
        p50_ms=round(p50, 1),
        p95_ms=round(p95, 1),
        p99_ms=round(p99, 1),
        passed=not reason,
        reason=reason,
    )


def highest_passing(steps: Sequence[StepResult]) -> StepResult | None:
    """The last step that passed before the first one that failed."""
    best = None
    for step in steps:
        if not step.passed:
            break
        best = step
    return best


def write_steps(path: str | Path, steps: Sequence[StepResult], slo_p99_ms: float) -> None:
    payload = {"slo_p99_ms": slo_p99_ms, "steps": [asdict(step) for step in steps]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def read_steps(path: str | Path) -> tuple[float, list[StepResult]]:
    payload = json.loads(Path(path).read_text())
    return float(payload["slo_p99_ms"]), [StepResult(**step) for step in payload["steps"]]


def steps_markdown(steps: Sequence[StepResult], slo_p99_ms: float) -> str:
    """The table of steps and the verdict: the highest rate whose p99 stayed under the SLO."""
    lines = [
        "| step | offered req/s | users | achieved req/s | requests | failures | p50 ms | p95 ms | p99 ms | SLO |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        verdict = "pass" if s.passed else f"miss: {s.reason}"
        lines.append(
            f"| {s.step} | {s.offered_rps:g} | {s.users} | {s.achieved_rps:.1f} | {s.requests} | {s.failures} "
            f"| {s.p50_ms:.0f} | {s.p95_ms:.0f} | {s.p99_ms:.0f} | {verdict} |"
        )
    best = highest_passing(steps)
    if best is None:
        verdict = f"No step kept p99 under {slo_p99_ms:g} ms"
        verdict += f" (the first: {steps[0].reason})." if steps else "."
    else:
        verdict = (
            f"Highest rate with p99 under {slo_p99_ms:g} ms: {best.offered_rps:g} requests/s "
            f"(achieved {best.achieved_rps:.1f}, p99 {best.p99_ms:.0f} ms)."
        )
        if best is steps[-1]:
            verdict += " Every step passed: raise the maximum rate to find the limit."
    return "\n".join([*lines, "", verdict])
