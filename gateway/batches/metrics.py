"""Batch metrics: lines by outcome, tries again after transient errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter


@dataclass
class BatchMetrics:
    registry: CollectorRegistry | None = None
    lines: Counter = field(init=False)
    retries: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.lines = Counter(
            "samo_batch_lines",
            "Batch lines run, by outcome (`ok`, or the error type of the line's error).",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "samo_batch_line_retries",
            "Batch lines tried again after a transient error, by its type.",
            ["error"],
            registry=self.registry,
        )
