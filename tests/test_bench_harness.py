"""The benchmark harness against a real stack: Triton's view of a row, saturation then open loop,
the sweep's config edits, its gateway coalescing rows and the response cache, the compute limit's
sub-batches.

One real Triton + gateway (subprocesses, as `samo bench` runs them) on the embedded zero-shot emotion
model (the coalescing rows: a tiny BERT); runs are short: these check the harness's accounting, not
speed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.encoder_serving import PREFERRED_BATCH_SIZES, QUEUE_DELAY_US
from load_tests.bench_emotion import SORTED, measure_in_process, sorted_sub_batches
from load_tests.bench_report import Shape, measure_http, write_plots
from load_tests.cpu_use import CPU_COLUMNS, StackProcesses
from load_tests.processes import RunningStack
from load_tests.sweep import (
    COALESCE_IN_FLIGHT,
    Setting,
    SweepOptions,
    apply,
    cache_args,
    sweep_model,
    workloads,
)
from load_tests.texts import journal_texts
from load_tests.triton_view import watch
from samo.triton.model_config import read_model_config

TEXTS = journal_texts(64, seed=5)


@pytest.fixture(scope="module")
def repository(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded zero-shot emotion model alone (the session's export)."""
    repository = tmp_path_factory.mktemp("bench-repository")
    (repository / "emotion").symlink_to(serving_repository / "emotion")
    return repository


@pytest.fixture(scope="module")
def stack(repository: Path, bench_stack) -> Iterator[RunningStack]:
    with bench_stack(repository) as running:
        yield running


def test_sorted_sub_batches_follow_the_triton_models_limits() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500).tolist()
    chunks = sorted_sub_batches(lengths, max_rows=32, max_tokens=4096)
    flat = np.concatenate(chunks)
    assert sorted(flat.tolist()) == list(range(500))  # every row exactly once
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered)  # by length, across and within sub-batches
    for chunk in chunks:
        longest = max(lengths[i] for i in chunk)
        assert len(chunk) <= 32
        assert len(chunk) == 1 or len(chunk) * longest <= 4096
    # Greedy: a sub-batch stops only when the next row would break a limit.
    for chunk, following in itertools.pairwise(chunks):
        grown = len(chunk) + 1
        assert grown > 32 or grown * lengths[following[0]] > 4096


def test_triton_view_counts_exactly_what_was_sent(stack: RunningStack) -> None:
    """Sequential requests: one request, one inference, one execution each, all of it seen."""
    with watch(stack.triton_grpc_url) as view, httpx.Client(timeout=30) as client:
        for text in TEXTS[:7]:
            client.post(f"{stack.gateway_url}/v1/emotions", json={"texts": [text]}).raise_for_status()
        client.post(f"{stack.gateway_url}/v1/emotions", json={"texts": TEXTS[:5]}).raise_for_status()
    seen = view.views["emotion"]
    assert seen.requests == 8
    assert seen.inferences == 7 + 5  # texts: the batch dimension
    assert seen.executions == 8
    assert seen.batch_size == pytest.approx(12 / 8)
    assert seen.compute_ms > 0 and seen.queue_ms >= 0 and seen.execution_ms > 0
    assert seen.failures == 0 and seen.cache_hits == 0
    assert set(view.columns("emotion")) >= {"triton_queue_ms", "triton_batch", "executions", "inferences"}
    assert view.columns("not-a-model") == {}


def test_saturation_then_open_loop_with_triton_view(stack: RunningStack, tmp_path: Path) -> None:
    bodies = [json.dumps({"texts": [text]}).encode() for text in TEXTS]
    shape = Shape(duration_s=1.0, warmup_s=0.3, concurrency=(1, 4), fractions=(0.25, 0.5))
    measured = measure_http(
        "minilm",
        "stack",
        f"{stack.gateway_url}/v1/emotions",
        bodies,
        shape,
        triton_grpc_url=stack.triton_grpc_url,
        triton_model="emotion",
        processes=StackProcesses(stack.gateway_pid, stack.triton_pid),
    )
    loads = [row["load"] for row in measured.rows]
    assert loads[:2] == ["c=1", "c=4"]
    saturation = max(r.throughput for r in measured.closed.values())
    for fraction, load in zip((0.25, 0.5), loads[2:], strict=True):
        result = measured.open[("minilm", "stack", fraction)]
        assert result.offered_rps == pytest.approx(fraction * saturation)
        assert load == f"open {fraction:.0%} ({fraction * saturation:.1f}/s)"
        assert result.successes > 0 and result.errors == 0
    assert all(row["errors"] == 0 for row in measured.rows)
    # Triton saw every row; each counted request reached it (the watch also covers warm-up and drain).
    assert [row["load"] for row in measured.triton_rows] == loads
    for row, result in zip(
        measured.triton_rows, [*measured.closed.values(), *measured.open.values()], strict=True
    ):
        assert row["inferences"] >= result.successes
        assert 1 <= row["triton_batch"] <= 64
        assert row["executions"] <= row["inferences"]
    # Where the cores went, closed-loop rows only: every part worked, the stub (the model) most.
    assert [row["load"] for row in measured.cpu_rows] == ["c=1", "c=4"]
    for row in measured.cpu_rows:
        assert 0 < row["cores_busy"] <= 2.5
        parts = {column: row[column] for column in CPU_COLUMNS[1:]}
        # The stack's parts each worked; the load generator's share of a starved core can round to 0
        # at the kernel's 10 ms accounting when other test runs share the machine.
        assert all(ms > 0 for column, ms in parts.items() if column != "cpu_ms_load_generator"), parts
        assert parts["cpu_ms_load_generator"] >= 0, parts
        assert row["cpu_ms_stubs"] == max(parts.values()), parts

    plots = write_plots(measured, tmp_path, "test", limits={("minilm", "limit"): saturation})
    assert {p.name for p in plots} == {
        "test-minilm-throughput.png",
        "test-minilm-latency-c4.png",
        "test-minilm-stack-latency-open.png",
        "test-minilm-latency-vs-load.png",
    }
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_sweep_setting_and_response_cache(repository: Path, tmp_path: Path, bench_stack) -> None:
    """A sweep setting lands in config.pbtxt as Triton reads it, and the response cache then answers
    repeated requests without running the model."""
    import shutil

    model_dir = tmp_path / "emotion"
    shutil.copytree(repository / "emotion", model_dir)
    apply(model_dir, Setting(queue_delay_us=700, preferred=(8,), instances=2, threads=1, cache=True))
    config = read_model_config(model_dir)
    assert config.dynamic_batching.max_queue_delay_microseconds == 700
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.instance_group[0].count == 2
    assert config.parameters["intra_op_threads"].string_value == "1"
    assert config.response_cache.enable

    with (
        bench_stack(tmp_path, triton_args=cache_args()) as cached,
        watch(cached.triton_grpc_url) as view,
        httpx.Client(timeout=30) as client,
    ):
        answers = [
            client.post(f"{cached.gateway_url}/v1/emotions", json={"texts": [TEXTS[i % 3]]}).json()
            for i in range(9)
        ]
    seen = view.views["emotion"]
    assert seen.requests == 9
    assert seen.cache_misses == 3 and seen.cache_hits == 6
    assert seen.executions == 3
    assert view.columns("emotion")["cache_hit_rate"] == pytest.approx(6 / 9)
    for i in range(3, 9):  # a cached answer is the same answer
        assert answers[i]["results"] == answers[i % 3]["results"]


def test_sweep_coalescing_rows_count_texts_per_triton_call(
    tiny_bert: Path, tmp_path: Path, triton_install
) -> None:
    """Each `coalesce_in_flight` value gets its row and a row per concurrency, with Triton's texts per
    call: 1 where nothing may join (a lone client, coalescing off), above 1 where 8 clients share one
    open call. The sweep starts its own stacks (`triton_install`)."""
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name="emotion", repository=tmp_path))
    options = SweepOptions(
        models=("emotion",),
        queue_delays_us=(QUEUE_DELAY_US,),  # the defaults alone: no other axis
        preferred=(PREFERRED_BATCH_SIZES,),
        instances=((1, 2),),
        coalesce_in_flight=(0, 1),
        cache=False,
        concurrency=(1, 8),
        duration_s=1.0,
        warmup_s=0.3,
    )
    measured = sweep_model("emotion", tmp_path, workloads()["emotion"], options)

    assert [(r["axis"], r["coalesce_in_flight"]) for r in measured.rows] == [
        ("default", COALESCE_IN_FLIGHT),
        ("coalescing", 0),
        ("coalescing", 1),
    ]
    assert all(r["texts_per_call"] > 0 and r["top_throughput_per_s"] > 0 for r in measured.rows)
    loads = measured.coalescing_loads()
    texts_per_call = {(r["coalesce_in_flight"], r["load"]): r["texts_per_call"] for r in loads}
    assert list(texts_per_call) == [
        (value, load) for value in sorted((0, 1, COALESCE_IN_FLIGHT)) for load in ("c=1", "c=8")
    ]
    for row in loads:
        assert 0 < row["p50_ms"] <= row["p95_ms"], row
        assert row["cores_busy"] > 0 and row["cpu_ms_gateway"] > 0 and row["cpu_ms_stubs"] > 0, row
    for value in (0, 1, COALESCE_IN_FLIGHT):  # a lone client's request is never joined
        assert texts_per_call[(value, "c=1")] == 1.0
    assert texts_per_call[(0, "c=8")] == 1.0  # off: every request its own call
    assert texts_per_call[(1, "c=8")] > 1.0  # one call open: the other clients' requests join
    assert any(line.startswith("- emotion, coalescing: coalesce_in_flight ") for line in measured.summary)


def test_compute_limit_rows(repository: Path) -> None:
    rows = measure_in_process("minilm", repository / "emotion", TEXTS, 0.2, "fp32", ("batch 1", SORTED))
    assert [row["load"] for row in rows] == ["batch 1", SORTED]
    assert all(row["throughput_per_s"] > 0 and row["p50_ms"] > 0 for row in rows)
