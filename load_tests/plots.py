"""PNG plots for load tests and benchmarks (matplotlib, no display needed).

plot_throughput_vs_concurrency(rows, "throughput.png")          # one line per system
plot_latency_distribution({"stack": [...], "naive": [...]}, "latency.png")
plot_over_time({"http": {"p50": (t, v), "p99": (t, v)}}, "over-time.png", y_label="ms")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # after the backend is chosen
import matplotlib.ticker
import numpy as np

Series = tuple[Sequence[float], Sequence[float]]
"""x values and y values of one line."""

# Percentiles shown on a latency distribution: the tail is what a user of the service notices.
QUANTILE_TICKS = (0.5, 0.9, 0.99, 0.999)


def plot_throughput_vs_concurrency(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    series_key: str = "system",
    x_key: str = "concurrency",
    y_key: str = "throughput",
    y_label: str = "requests/s",
    title: str = "Throughput against concurrency",
) -> Path:
    """One line per distinct `row[series_key]`: `row[y_key]` against `row[x_key]` (log2 x axis)."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        lines.setdefault(str(row[series_key]), []).append((float(row[x_key]), float(row[y_key])))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in lines.items():
        points.sort()
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    xs = sorted({x for points in lines.values() for x, _ in points})
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 4:
        axes.set_xscale("log", base=2)
        axes.set_xticks(xs, [f"{x:g}" for x in xs])
    axes.set_xlabel(x_key)
    axes.set_ylabel(y_label)
    axes.set_ylim(bottom=0)
    return _save(figure, axes, path, title)


def plot_latency_distribution(
    latencies_by_label: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    unit: str = "ms",
    title: str = "Latency distribution",
) -> Path:
    """Latency at each percentile, one line per label, tail stretched out (logit x axis, as HdrHistogram)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, latencies in latencies_by_label.items():
        values = np.sort(np.asarray(latencies, dtype=float))
        if values.size < 2:
            continue
        # The empirical quantile of the i-th smallest value, kept strictly inside (0, 1) for the logit axis.
        quantiles = (np.arange(values.size) + 0.5) / values.size
        axes.plot(quantiles, values, label=f"{label} (n={values.size})")
    axes.set_xscale("logit")
    axes.set_xticks(QUANTILE_TICKS, [f"p{q * 100:g}" for q in QUANTILE_TICKS])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("percentile")
    axes.set_ylabel(f"latency ({unit})")
    axes.set_ylim(bottom=0)
    return _save(figure, axes, path, title)


def plot_over_time(
    panels: Mapping[str, Mapping[str, Series]],
    path: str | Path,
    *,
    y_label: str,
    x_label: str = "seconds since start",
    title: str = "",
) -> Path:
    """One panel per key of `panels` (stacked, shared x axis), one line per series in it."""
    figure, all_axes = plt.subplots(
        len(panels) or 1, 1, figsize=(8, 2.8 * max(len(panels), 1) + 0.6), sharex=True, squeeze=False
    )
    for axes, (panel, series) in zip(all_axes[:, 0], panels.items(), strict=False):
        for label, (xs, ys) in series.items():
            axes.plot(list(xs), list(ys), label=label)
        axes.set_title(panel, fontsize="medium")
        axes.set_ylabel(y_label)
        axes.set_ylim(bottom=0)
        if series:
            axes.legend(fontsize="small", loc="upper left")
        axes.grid(alpha=0.3)
    all_axes[-1, 0].set_xlabel(x_label)
    return _save(figure, None, path, title)


def _save(figure: Any, axes: Any, path: str | Path, title: str) -> Path:
    if axes is not None:
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
