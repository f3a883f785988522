"""Where the cores go while a benchmark row runs: CPU time of the gateway, tritonserver, its Python
stubs and the load generator, per answered request.

On a small machine these parts share the cores, so a stack's throughput is bounded by the model's
compute plus everything else per request; these columns say how much "everything else" is, and which
part of it to cut.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

PARTS = ("gateway", "tritonserver", "stubs", "load generator")


def _column(part: str) -> str:
    return f"cpu_ms_{part.replace(' ', '_')}"


CPU_COLUMNS = ("cores_busy", *map(_column, PARTS))


@dataclass(frozen=True)
class StackProcesses:
    gateway_pid: int
    triton_pid: int

    def parts(self) -> dict[str, list[psutil.Process]]:
        """The processes of each part, as they are now (the stubs are tritonserver's children)."""
        gateway = psutil.Process(self.gateway_pid)
        triton = psutil.Process(self.triton_pid)
        return {
            "gateway": [gateway, *gateway.children(recursive=True)],
            "tritonserver": [triton],
            "stubs": triton.children(recursive=True),
            "load generator": [psutil.Process()],
        }


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


@dataclass
class CpuUse:
    """Filled in when the `cpu_use` block ends: CPU seconds per part, and the block's wall time."""

    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def columns(self, answered_per_s: float) -> dict[str, object]:
        """Cores busy in all, and CPU milliseconds per answered request for each part (the block's
        requests counted at the row's measured rate, warm-up included: the rate is steady by then)."""
        if not self.seconds or self.wall_s <= 0 or answered_per_s <= 0:
            return {}
        answered = answered_per_s * self.wall_s
        row: dict[str, object] = {"cores_busy": sum(self.seconds.values()) / self.wall_s}
        for part, seconds in self.seconds.items():
            row[_column(part)] = seconds * 1000 / answered
        return row


@contextlib.contextmanager
def cpu_use(processes: StackProcesses | None) -> Iterator[CpuUse]:
    """CPU seconds each part spent inside the block (nothing when `processes` is None). The load
    generator is this process and the children it ran to the end inside the block (wrk, gRPC client
    processes): the stack's servers are children too, but run past the block."""
    use = CpuUse()
    if processes is None:
        yield use
        return
    parts = processes.parts()
    before = {part: _cpu_seconds(members) for part, members in parts.items()}
    children_before = _ended_children_seconds()
    started = time.monotonic()
    yield use
    use.wall_s = time.monotonic() - started
    for part, members in parts.items():
        after = _cpu_seconds(members)
        use.seconds[part] = sum(after[pid] - before[part].get(pid, 0.0) for pid in after)
    use.seconds["load generator"] += _ended_children_seconds() - children_before


def _ended_children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
