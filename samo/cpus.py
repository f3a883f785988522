"""Cores this process may use, and how many gateway processes to run on them.

`os.cpu_count()` counts the machine's cores; a container limited by its cgroup's CPU quota (Kubernetes'
`resources.limits.cpu`) or a process pinned by its affinity may use fewer. Running more gateway processes
than that only makes them take turns.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPU affinity's core count, capped by the cgroup's CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs per period this process's cgroup may use (cgroup v2 `cpu.max`, else v1's CFS quota), or None
    when it has no limit or no cgroup file can be read."""
    try:
        v2_path = next(
            (
                line.split("::", 1)[1]
                for line in proc_cgroup.read_text().splitlines()
                if line.startswith("0::")
            ),
            "/",
        )
    except OSError:
        v2_path = "/"
    for folder in (cgroup_root / v2_path.lstrip("/"), cgroup_root):  # the own cgroup, then a container's root
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def gateway_workers(*, beside_triton: bool, cores: int | None = None) -> int:
    """Gateway processes for `cores` usable cores (this process's by default): one per core for a gateway
    of its own (the gateway image); half of them, at least one, when Triton runs on the same cores (`samo
    serve`, the benchmarks' stack) and needs them for the models. On the one GPU run (16 cores), eight
    gateway processes served 2,138 texts/s at c=256 where one served 721 (load_tests/results/gpu/workers)."""
    available = usable_cores() if cores is None else cores
    return max(1, available // 2) if beside_triton else max(1, available)
