"""Triton's view of a benchmark row: what its statistics say happened to each model during the row.

The client sees latency; Triton sees where it went. Read Triton's cumulative statistics before and
after a row (`TritonWatch`) and take the difference per model: requests, inferences (rows of the
batch dimension: texts, windows) and executions (model runs), so the average batch size and rows
per request; time in the queue and in compute per request; compute per execution; response-cache hits
and misses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import InferenceServerClient

__all__ = ["ModelCounters", "TritonView", "TritonWatch", "counters", "views_between", "watch"]

# Triton records an execution's statistics after sending its responses: reads are repeated until the
# counts stop moving for this long (or `_SETTLE_TIMEOUT_S` passes).
_SETTLE_S = 0.2
_SETTLE_TIMEOUT_S = 10.0
NS_PER_MS = 1e6


@dataclass(frozen=True)
class ModelCounters:
    """One model's cumulative counters at one moment (durations in nanoseconds, summed over requests)."""

    requests: int
    failures: int
    inferences: int
    executions: int
    queue_ns: int
    compute_ns: int
    """Summed per request: each request in a batch is charged the batch's input, infer and output time."""
    execution_compute_ns: int
    """Summed per execution (from the per-batch-size statistics)."""
    cache_hits: int
    cache_misses: int

    @classmethod
    def from_statistics(cls, stats: Any) -> ModelCounters:
        inference = stats.inference_stats
        return cls(
            requests=int(inference.success.count),
            failures=int(inference.fail.count),
            inferences=int(stats.inference_count),
            executions=int(stats.execution_count),
            queue_ns=int(inference.queue.ns),
            compute_ns=int(
                inference.compute_input.ns + inference.compute_infer.ns + inference.compute_output.ns
            ),
            execution_compute_ns=sum(
                int(b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns) for b in stats.batch_stats
            ),
            cache_hits=int(inference.cache_hit.count),
            cache_misses=int(inference.cache_miss.count),
        )

    def __sub__(self, other: ModelCounters) -> ModelCounters:
        return ModelCounters(
            **{name: getattr(self, name) - getattr(other, name) for name in self.__dataclass_fields__}
        )


@dataclass(frozen=True)
class TritonView:
    """What one model did during a row."""

    model: str
    requests: int
    failures: int
    inferences: int
    executions: int
    queue_ms: float
    """Mean time a request waited in the dynamic batcher's queue."""
    compute_ms: float
    """Mean compute time charged to a request (its batch's input + infer + output)."""
    execution_ms: float
    """Mean time of one model execution."""
    cache_hits: int
    cache_misses: int

    @property
    def batch_size(self) -> float:
        """Mean inferences per execution: how well the dynamic batcher filled batches."""
        return self.inferences / self.executions if self.executions else 0.0

    @property
    def texts_per_request(self) -> float:
        """Mean inferences per request: the texts in one call from the gateway, above 1 when it joined
        concurrent requests (gateway/coalescing.py) or a request carried several."""
        return self.inferences / self.requests if self.requests else 0.0

    @classmethod
    def from_delta(cls, model: str, delta: ModelCounters) -> TritonView:
        answered = max(delta.requests - delta.cache_hits, 0)  # cache hits skip queue and compute
        return cls(
            model=model,
            requests=delta.requests,
            failures=delta.failures,
            inferences=delta.inferences,
            executions=delta.executions,
            queue_ms=delta.queue_ns / answered / NS_PER_MS if answered else 0.0,
            compute_ms=delta.compute_ns / answered / NS_PER_MS if answered else 0.0,
            execution_ms=delta.execution_compute_ns / delta.executions / NS_PER_MS
            if delta.executions
            else 0.0,
            cache_hits=delta.cache_hits,
            cache_misses=delta.cache_misses,
        )

    def columns(self) -> dict[str, object]:
        """Table columns, next to the client's: prefixed `triton_` where the name alone is ambiguous."""
        row: dict[str, object] = {
            "triton_queue_ms": self.queue_ms,
            "triton_compute_ms": self.compute_ms,
            "triton_batch": self.batch_size,
            "texts_per_call": self.texts_per_request,
            "triton_exec_ms": self.execution_ms,
            "executions": self.executions,
            "inferences": self.inferences,
        }
        if self.cache_hits or self.cache_misses:
            row["cache_hit_rate"] = self.cache_hits / (self.cache_hits + self.cache_misses)
        return row


VIEW_COLUMNS = (
    "triton_queue_ms",
    "triton_compute_ms",
    "triton_batch",
    "triton_exec_ms",
    "executions",
    "inferences",
)


def counters(client: InferenceServerClient) -> dict[str, ModelCounters]:
    """Every loaded model's counters, by model name (versions summed)."""
    totals: dict[str, ModelCounters] = {}
    # tritonclient raises on errors (through an unannotated helper) instead of returning None.
    response = client.get_inference_statistics(model_name="")
    for stats in response.model_stats:  # pyright: ignore[reportOptionalMemberAccess]
        current = ModelCounters.from_statistics(stats)
        previous = totals.get(stats.name)
        totals[stats.name] = current if previous is None else _add(previous, current)
    return totals


def _add(a: ModelCounters, b: ModelCounters) -> ModelCounters:
    return ModelCounters(**{name: getattr(a, name) + getattr(b, name) for name in a.__dataclass_fields__})


def settled_counters(client: InferenceServerClient) -> dict[str, ModelCounters]:
    """Counters once they stop moving: the last executions of a row are recorded after their answers."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    last = counters(client)
    while time.monotonic() < deadline:
        time.sleep(_SETTLE_S)
        now = counters(client)
        if now == last:
            return now
        last = now
    return last


def views_between(
    before: Mapping[str, ModelCounters], after: Mapping[str, ModelCounters]
) -> dict[str, TritonView]:
    """Per model that served requests in between, what it did."""
    views = {}
    for model, now in after.items():
        delta = now - before[model] if model in before else now
        if delta.requests or delta.failures:
            views[model] = TritonView.from_delta(model, delta)
    return views


@dataclass
class TritonWatch:
    """Filled in when the `watch` block ends: what each model did inside it."""

    views: dict[str, TritonView] = field(default_factory=dict)

    def columns(self, model: str) -> dict[str, object]:
        """`model`'s columns, or none when it served nothing in the block."""
        view = self.views.get(model)
        return view.columns() if view else {}


@contextmanager
def watch(grpc_url: str) -> Iterator[TritonWatch]:
    """Triton's statistics around the block, for the server at `grpc_url` (host:port)."""
    client = InferenceServerClient(grpc_url)
    try:
        before = settled_counters(client)
        result = TritonWatch()
        yield result
        result.views = views_between(before, settled_counters(client))
    finally:
        client.close()
