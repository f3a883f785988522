"""Locust covers the product: every operation over HTTP and gRPC, plots, and the step-load SLO search."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from load_tests.locust_mix import OPERATIONS, REQUEST_NAMES, parse_mix
from load_tests.locust_slo import StepResult, highest_passing, judge_step, steps_markdown
from load_tests.plots import plot_latency_distribution, plot_over_time, plot_throughput_vs_concurrency
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway, running_gateway

LOCUSTFILE = Path(__file__).parents[1] / "load_tests" / "locustfile.py"
EVERY_OPERATION_ONCE = ",".join(f"{name}=1" for name in OPERATIONS)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


API_KEY = "samo-loadtest-key-0123456789"


@pytest.fixture(scope="module")
def patient_gateway(
    triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory, make_gateway_settings
) -> Iterator[Gateway]:
    """The session's models behind a gateway with long deadlines that wants an API key: these tests
    check the load test (its key included: without it every request is a 401), not how the gateway
    sheds load, and a shared 2-core machine can be far slower than usual."""
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"loadtest:{API_KEY}\n")
    settings = make_gateway_settings(
        triton,
        api_keys_file=keys,
        default_summarizer="extractive",
        triton_timeout_s=300,
        # Probes slowed by a busy machine must not get models reloaded under the load test.
        health_probe_interval_s=3600,
        health_probe_timeout_s=300,
    )
    with running_gateway(settings) as running:
        yield running


def _samo_loadtest(*args: str, timeout_s: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samo_cli", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=LOCUSTFILE.parents[1],
    )


def _stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as file:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}


def test_mix_names_and_weights_are_checked() -> None:
    assert parse_mix("emotions=5, transcribe=1,summarize=0") == {"emotions": 5, "transcribe": 1}
    with pytest.raises(ValueError, match="`speak=1` is not `name=weight`"):
        parse_mix("speak=1")
    with pytest.raises(ValueError, match="weight of `emotions` must be a whole number"):
        parse_mix("emotions=lots")
    with pytest.raises(ValueError, match="at least one operation"):
        parse_mix("emotions=0")


def test_the_highest_rate_is_the_last_step_before_the_first_miss() -> None:
    fast = [10.0] * 98 + [40.0, 45.0]
    slow = [10.0] * 90 + [900.0] * 10
    steps = [
        judge_step(1, 5, 5, fast, failures=0, measured_s=20, slo_p99_ms=50),
        judge_step(2, 10, 10, fast * 2, failures=0, measured_s=20, slo_p99_ms=50),
        judge_step(3, 15, 15, slow * 3, failures=0, measured_s=20, slo_p99_ms=50),
        judge_step(4, 20, 20, fast * 4, failures=0, measured_s=20, slo_p99_ms=50),
    ]
    assert [s.passed for s in steps] == [True, True, False, True]
    assert "p99 900 ms over the SLO of 50 ms" in steps[2].reason
    assert highest_passing(steps) is steps[1]
    assert "Highest rate with p99 under 50 ms: 10 requests/s" in steps_markdown(steps, 50)
    # A failed request, or a rate the users could not reach (a saturated server), also misses the step.
    assert "1 of 200 requests failed" in judge_step(1, 10, 10, fast * 2, 1, 20, 50).reason
    assert "reached only 2.5 of 10" in judge_step(1, 10, 10, fast[:50], 0, 20, 50).reason
    assert "No step kept p99 under 50 ms" in steps_markdown(steps[2:], 50)


def test_plots_are_png_files(tmp_path: Path) -> None:
    rows = [
        {"system": s, "concurrency": c, "throughput": c * k}
        for s, k in (("a", 2), ("b", 3))
        for c in (1, 8, 32)
    ]
    rows.append({"system": "zero", "concurrency": 0, "throughput": 1})  # a sweep's x may start at 0
    paths = [
        plot_throughput_vs_concurrency(rows, tmp_path / "throughput.png"),
        plot_latency_distribution({"a": [1.0, 2.0, 3.0, 50.0], "empty": []}, tmp_path / "latency.png"),
        plot_over_time(
            {"http": {"p50": ([0.5, 1.5], [3.0, 4.0])}, "grpc": {}}, tmp_path / "t.png", y_label="ms"
        ),
    ]
    assert all(path.read_bytes()[:8] == PNG_MAGIC for path in paths)


def test_plain_locust_runs_http_users_without_a_grpc_target(patient_gateway: Gateway, tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    assert locust, "locust is installed by `make install` (the `load` extra)"
    run = ["-t", "6s", "--mix", "emotions=3,summarize=1", "--csv", str(tmp_path / "run"), "--only-summary"]
    host = patient_gateway.http_url
    command = [locust, "-f", str(LOCUSTFILE), "--host", host, "--headless", "-u", "2", "-r", "2", *run]
    result = subprocess.run(
        command,
        env={**os.environ, "SAMO_LOADTEST_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=LOCUSTFILE.parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stats = _stats(tmp_path / "run_stats.csv")
    assert int(stats[("POST", "/v1/emotions")]["Request Count"]) >= 1
    assert not any(kind == "grpc" for kind, _ in stats)
    assert stats[("", "Aggregated")]["Failure Count"] == "0"


def test_loadtest_runs_every_operation_over_http_and_grpc(patient_gateway: Gateway, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _samo_loadtest(
        "--host", patient_gateway.http_url,
        "--grpc", patient_gateway.grpc_target,
        "--api-key", API_KEY,
        # As many users per transport as operations: each starts on another one (load_tests/locustfile.py)
        # at a random moment of the first 8 s (1 request per 8 s each), and its request has 10 s to finish
        # before the run ends (with 2 s, a journal from audio on a loaded machine was once cut off).
        "--users", str(2 * len(OPERATIONS)), "--spawn-rate", str(2 * len(OPERATIONS)),
        "--rate-per-user", "0.125", "--duration", "18s",
        "--mix", EVERY_OPERATION_ONCE,
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = _stats(out / "locust_stats.csv")
    for operation in OPERATIONS:
        http_name, grpc_name = REQUEST_NAMES[operation]
        for key in (("POST", http_name), ("grpc", grpc_name)):
            assert key in stats, f"{key} missing from Locust's statistics: {sorted(stats)}"
            assert int(stats[key]["Request Count"]) >= 1
            assert stats[key]["Failure Count"] == "0", (out / "locust_failures.csv").read_text()
    assert stats[("", "Aggregated")]["Failure Count"] == "0"
    with (out / "requests.csv").open(newline="") as file:
        logged = {(row["transport"], row["name"]) for row in csv.DictReader(file)}
    expected = {("http", http) for http, _ in REQUEST_NAMES.values()}
    assert logged == expected | {("grpc", grpc) for _, grpc in REQUEST_NAMES.values()}
    for plot in ("throughput.png", "latency.png", "latency-distribution.png"):
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC, plot
    assert (out / "report.html").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "| grpc | Transcribe |" in summary and "| http | /v1/journal [audio] |" in summary


def test_step_load_reports_the_highest_rate_under_the_slo(patient_gateway: Gateway, tmp_path: Path) -> None:
    out = tmp_path / "steps"
    result = _samo_loadtest(
        "--host", patient_gateway.http_url,
        "--grpc", patient_gateway.grpc_target,
        "--api-key", API_KEY,
        "--mix", "emotions=1",
        "--slo-p99-ms", "60000",
        "--step-rate", "2", "--step-duration", "5", "--max-rate", "4",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "step-load.json").read_text())
    steps = [StepResult(**step) for step in report["steps"]]
    # Rising steps of 2 requests/s (1 request/s per user) up to the maximum, or to the first miss.
    assert [(s.offered_rps, s.users) for s in steps] == [(2, 2), (4, 4)][: len(steps)]
    assert all(s.passed for s in steps[:-1]), "the run stops at the first step that misses"
    assert len(steps) == 2 or not steps[-1].passed, "or after the step at the maximum rate"
    assert all(s.requests > 0 and s.failures == 0 and s.p50_ms <= s.p95_ms <= s.p99_ms for s in steps)
    table = (out / "step-load.md").read_text()
    best = highest_passing(steps)
    if best is None:  # a machine too busy to reach even 2 requests/s says so
        assert "No step kept p99 under 60000 ms (the first: reached only" in table
    else:
        assert f"Highest rate with p99 under 60000 ms: {best.offered_rps:g} requests/s" in table
    assert table.splitlines()[-1] in result.stdout
