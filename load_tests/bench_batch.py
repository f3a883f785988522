"""`samo bench batch-interference`: does a running batch hurt interactive requests?

On one stack (Triton and a gateway process, as `make serve` runs them, embedded batch store):
1. the sustainable interactive rate: closed loop, one journal text per `/v1/emotions` request;
2. interactive requests at `fraction` of that rate (open loop, Poisson arrivals, latency from each
   request's due time) with no batch;
3. the same with a large emotion batch running (created just before the window), and the batch's
   progress over the window in lines per second.
The target (issue 24): p99 with the batch within 1.2x of p99 without it, while the batch progresses.
The load generator shares the machine's cores with what it measures; run it on a quiet machine and
compare the rows of one run only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from load_tests.loadgen import LoadResult, format_table, run_load_sync, run_open_loop_sync
from load_tests.processes import gateway_stack
from load_tests.texts import journal_texts


@dataclass(frozen=True)
class InterferenceOptions:
    repository: Path
    duration_s: float = 20.0
    fraction: float = 0.5
    batch_lines: int = 20_000
    concurrency: int = 32


def _batch_file(texts: list[str], count: int) -> bytes:
    lines = (
        {
            "custom_id": f"n{i}",
            "method": "POST",
            "url": "/v1/emotions",
            "body": {"texts": [texts[i % len(texts)]]},
        }
        for i in range(count)
    )
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _completed(http: httpx.Client, batch_id: str) -> int:
    return http.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"]


def _row(name: str, result: LoadResult, batch_rate: float | None) -> dict[str, object]:
    return {
        "interactive load": name,
        "offered req/s": result.offered_rps,
        "answered req/s": result.throughput,
        "p50 ms": result.p50_ms,
        "p99 ms": result.p99_ms,
        "errors": result.errors,
        "batch lines/s": batch_rate,
    }


def run_interference(options: InterferenceOptions) -> str:
    texts = journal_texts(256, seed=7)
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    store = Path(f"/tmp/samo-bench-batch-{int(time.time())}")
    settings = {"SAMO_BATCH_DIR": str(store), "SAMO_HEALTH_PROBE_INTERVAL_S": "120"}
    with gateway_stack(options.repository, settings=settings) as stack:
        url = f"{stack.gateway_url}/v1/emotions"
        saturation = run_load_sync(
            url, bodies, concurrency=options.concurrency, duration_s=options.duration_s / 2
        )
        rate = saturation.throughput * options.fraction
        alone = run_open_loop_sync(url, bodies, rate_per_s=rate, duration_s=options.duration_s, seed=1)
        with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
            file_id = http.post(
                "/v1/files",
                files={"file": ("batch.jsonl", _batch_file(texts, options.batch_lines))},
                data={"purpose": "batch"},
            ).json()["id"]
            batch = http.post(
                "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/emotions"}
            ).json()
            time.sleep(2.0)  # the batch under way
            before, started = _completed(http, batch["id"]), time.monotonic()
            beside = run_open_loop_sync(url, bodies, rate_per_s=rate, duration_s=options.duration_s, seed=1)
            batch_rate = (_completed(http, batch["id"]) - before) / (time.monotonic() - started)
            http.post(f"/v1/batches/{batch['id']}/cancel")
    rows = [
        {
            "interactive load": f"saturation (closed loop, c={options.concurrency})",
            "offered req/s": None,
            "answered req/s": saturation.throughput,
            "p50 ms": saturation.p50_ms,
            "p99 ms": saturation.p99_ms,
            "errors": saturation.errors,
            "batch lines/s": None,
        },
        _row(f"{options.fraction:.0%} of saturation, no batch", alone, None),
        _row(f"{options.fraction:.0%} of saturation, batch running", beside, batch_rate),
    ]
    columns = [
        "interactive load",
        "offered req/s",
        "answered req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "batch lines/s",
    ]
    ratio = beside.p99_ms / alone.p99_ms if alone.p99_ms else float("nan")
    return (
        format_table(rows, columns)
        + f"\n\np99 with the batch / without: {ratio:.2f} (target: at most 1.2); batch progressed at "
        f"{batch_rate:.0f} lines/s during the window.\n"
    )
