"""Usable cores from the CPU affinity and the cgroup's quota (fake cgroup folders), and the gateway's
automatic process count from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from samo.cpus import cgroup_cpu_quota, gateway_workers, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"1:cpu:/\n0::{own}\n")
    return root, proc


@pytest.mark.parametrize(
    ("files", "own", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, "/", 1.5),  # a container's own root (cgroup v2)
        ({"kubepods/pod1/cpu.max": "50000 100000\n", "cpu.max": "max 100000\n"}, "/kubepods/pod1", 0.5),
        ({"cpu.max": "max 100000\n"}, "/", None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "/", 3.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "/", None),
        ({}, "/", None),
    ],
)
def test_the_quota_comes_from_the_process_cgroup(
    tmp_path: Path, files: dict[str, str], own: str, quota: float | None
) -> None:
    assert cgroup_cpu_quota(*_cgroup(tmp_path, files, own)) == quota


def test_a_quota_caps_the_affinity_rounded_up(tmp_path: Path) -> None:
    assert usable_cores(*_cgroup(tmp_path, {"cpu.max": "max 100000"})) == AFFINITY
    assert usable_cores(*_cgroup(tmp_path, {"cpu.max": "50000 100000"})) == 1  # never 0
    assert usable_cores(*_cgroup(tmp_path, {"cpu.max": f"{AFFINITY * 400000} 100000"})) == AFFINITY


@pytest.mark.parametrize(
    ("cores", "alone", "beside_triton"), [(1, 1, 1), (2, 2, 1), (4, 4, 2), (16, 16, 8), (3, 3, 1)]
)
def test_gateway_processes_per_core(cores: int, alone: int, beside_triton: int) -> None:
    assert gateway_workers(beside_triton=False, cores=cores) == alone
    assert gateway_workers(beside_triton=True, cores=cores) == beside_triton
