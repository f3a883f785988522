"""After a Locust run: plots over time and an exact-percentile table from its request log.

throughput.png   requests/s over time, per transport and in all
latency.png      p50 / p95 / p99 over time, one panel per transport
latency-distribution.png   latency at each percentile, per transport
summary.md       per transport and request name: requests, failures, requests/s, p50 / p95 / p99
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from load_tests.locust_request_log import read_request_log
from load_tests.plots import Series, plot_latency_distribution, plot_over_time

Row = tuple[float, str, str, float, bool]
PERCENTILES = (50, 95, 99)
# About this many points per line, whatever the run's length; never bins under a second.
POINTS_PER_LINE = 60


def write_report(request_log: str | Path, out: str | Path) -> list[Path]:
    """Plots and summary.md in `out` from the request log; the paths written."""
    rows = read_request_log(request_log)
    out = Path(out)
    if not rows:
        return []
    by_transport: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_transport[row[1]].append(row)
    duration = max(row[0] for row in rows)
    width = max(1.0, duration / POINTS_PER_LINE)
    throughput = {transport: _rate(part, width) for transport, part in sorted(by_transport.items())}
    if len(by_transport) > 1:
        throughput["all"] = _rate(rows, width)
    latency = {transport: _percentiles(part, width) for transport, part in sorted(by_transport.items())}
    paths = [
        plot_over_time(
            {"throughput (answers per second)": throughput},
            out / "throughput.png",
            y_label="requests/s",
            title="Throughput over time",
        ),
        plot_over_time(latency, out / "latency.png", y_label="latency (ms)", title="Latency over time"),
        plot_latency_distribution(
            {t: [row[3] for row in part] for t, part in sorted(by_transport.items())},
            out / "latency-distribution.png",
            title="Latency distribution, whole run",
        ),
    ]
    summary = out / "summary.md"
    summary.write_text(summary_markdown(rows, duration) + "\n")
    return [*paths, summary]


def summary_markdown(rows: Sequence[Row], duration_s: float) -> str:
    """Per transport and request name: requests, failures, answers per second, exact percentiles (ms)."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row[1], row[2])].append(row)
    lines = [
        "| transport | request | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (transport, name), part in sorted(groups.items()):
        lines.append(_summary_line(transport, name, part, duration_s))
    lines.append(_summary_line("all", "", rows, duration_s))
    return "\n".join(lines)


def _summary_line(transport: str, name: str, part: Sequence[Row], duration_s: float) -> str:
    latencies = np.asarray([row[3] for row in part])
    p50, p95, p99 = np.percentile(latencies, PERCENTILES)
    failures = sum(row[4] for row in part)
    rate = len(part) / duration_s if duration_s > 0 else 0.0
    return f"| {transport} | {name} | {len(part)} | {failures} | {rate:.1f} | {p50:.0f} | {p95:.0f} | {p99:.0f} |"


def _bins(rows: Sequence[Row], width: float) -> dict[int, list[Row]]:
    bins: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        bins[int(row[0] // width)].append(row)
    return bins


def _rate(rows: Sequence[Row], width: float) -> Series:
    bins = _bins(rows, width)
    last = max(bins)
    # Empty bins are zero throughput, not a gap: a stalled server shows as a drop to 0.
    return [(b + 0.5) * width for b in range(last + 1)], [
        len(bins.get(b, ())) / width for b in range(last + 1)
    ]


def _percentiles(rows: Sequence[Row], width: float) -> dict[str, Series]:
    bins = sorted(_bins(rows, width).items())
    times = [(b + 0.5) * width for b, _ in bins]
    values = [np.percentile([row[3] for row in part], PERCENTILES) for _, part in bins]
    return {f"p{p}": (times, [v[i] for v in values]) for i, p in enumerate(PERCENTILES)}
