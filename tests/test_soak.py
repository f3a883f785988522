"""`samo soak`'s logic: warm-up left out of the growth figures, a leak visible as growth and trend, and a
short real soak against the session's gateway and Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.soak import Sample, SoakOptions, growth, run_soak
from samo.triton.local_server import LocalTriton
from tests.conftest import Gateway


def _samples(rss: list[float], warmup: int, every_s: float = 5.0) -> list[Sample]:
    return [
        Sample(
            elapsed_s=(i - warmup + 1) * every_s,
            requests=10,
            errors=0,
            p50_ms=50.0,
            p95_ms=100.0,
            p99_ms=120.0,
            rss_mb={"stub:whisper": value},
            warmup=i < warmup,
        )
        for i, value in enumerate(rss)
    ]


def test_warm_up_is_left_out_of_growth() -> None:
    # Grows from 200 to 275 MB while warming up, then flat: no growth, no trend.
    rss = [200.0 + 5 * i for i in range(16)] + [275.0] * 120
    (whisper, latency) = growth(_samples(rss, warmup=16))
    assert whisper.what == "RSS stub:whisper (MB)"
    assert whisper.first == pytest.approx(275.0)
    assert whisper.percent == pytest.approx(0.0)
    assert whisper.trend_per_10_min == pytest.approx(0.0, abs=1e-9)
    assert latency.percent == pytest.approx(0.0)


def test_a_leak_shows_as_growth_and_trend() -> None:
    # 1 MB per sample of 5 s = 120 MB per 10 minutes after the warm-up.
    rss = [100.0] * 10 + [100.0 + i for i in range(120)]
    (whisper, _) = growth(_samples(rss, warmup=10))
    assert whisper.trend_per_10_min == pytest.approx(120.0)
    assert whisper.percent > 50


def test_short_real_soak(gateway: Gateway, triton: LocalTriton, tmp_path: Path) -> None:
    options = SoakOptions(
        http_url=gateway.http_url,
        grpc_target=gateway.grpc_target,
        duration_s=8.0,
        warmup_s=4.0,
        rate=3.0,
        sample_every_s=2.0,
        triton_pid=triton.pid,
    )
    report = run_soak(options, tmp_path).read_text()
    lines = (tmp_path / "samples.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    measured = [row for row in rows if row[header.index("warmup")] == "False"]
    assert measured and len(measured) < len(rows), "warm-up samples are kept and marked"
    assert sum(int(row[header.index("errors")]) for row in rows) == 0, report
    assert sum(int(row[header.index("requests")]) for row in measured) > 0
    # Every Triton process is watched: the server and the stubs, by model.
    assert "rss_mb:tritonserver" in header and "rss_mb:stub:emotion" in header, header
    assert "| RSS tritonserver (MB) |" in report and "- rate given, no search" in report
