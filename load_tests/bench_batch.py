"""`samo bench batch` (the issue's benchmark) and `samo bench batch-interference` (its interference part
alone): what a batch achieves, and does a running batch hurt interactive requests?

`samo bench batch` (`run_batch_bench`): one stack; the sustainable synchronous rates (closed loops: one
journal text per `/v1/emotions` request at c=32, one voice note per `/v1/transcribe` request at c=4);
interactive requests at `fraction` of the text rate without a batch; then a text batch of `texts` lines
and a voice-note batch of `voice_notes` lines (real read speech, uploaded once per distinct clip)
created together, the same interactive load during their first window, and both run to their end:
lines/s and audio seconds/s against the synchronous rates.

`samo bench batch-interference` (`run_interference`):

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

from load_tests.bench_whisper import Clip, multipart_bodies
from load_tests.loadgen import LoadResult, format_table, run_load_sync, run_open_loop_sync
from load_tests.processes import gateway_stack
from load_tests.texts import journal_texts
from samo.contracts.whisper import SAMPLE_RATE
from samo.evaluation.journal_speech import wav_bytes
from samo.evaluation.read_speech import read_speech_clips

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class BatchBenchOptions:
    """Both benchmarks' options (`run_interference` runs a text batch of `texts` lines only)."""

    repository: Path
    duration_s: float = 20.0
    """Each closed loop and each interactive window."""
    fraction: float = 0.5
    texts: int = 10_000
    voice_notes: int = 200
    concurrency: int = 32
    """Clients of the synchronous text closed loop (the sustainable rate)."""
    audio_concurrency: int = 4
    runner_process: bool = True
    """Batch lines in the niced `samo worker` child (the default); False: in the gateway process."""
    timeout_s: float = 3600.0
    """Longest the batches may take."""


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


def _settings(store: Path, options: BatchBenchOptions) -> dict[str, str]:
    return {
        "SAMO_BATCH_DIR": str(store),
        "SAMO_HEALTH_PROBE_INTERVAL_S": "120",
        "SAMO_BATCH_RUNNER_PROCESS": str(options.runner_process).lower(),
    }


def _under_way(http: httpx.Client, batch_id: str, timeout_s: float = 120.0) -> None:
    """Until the batch answers lines (the embedded runner process starts with the store), then 2 s."""
    deadline = time.monotonic() + timeout_s
    while _completed(http, batch_id) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} answered no line within {timeout_s:.0f} s")
        time.sleep(0.2)
    time.sleep(2.0)


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


def run_interference(options: BatchBenchOptions) -> str:
    texts = journal_texts(256, seed=7)
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    store = Path(f"/tmp/samo-bench-batch-{int(time.time())}")
    with gateway_stack(options.repository, settings=_settings(store, options)) as stack:
        url = f"{stack.gateway_url}/v1/emotions"
        saturation = run_load_sync(
            url, bodies, concurrency=options.concurrency, duration_s=options.duration_s / 2
        )
        rate = saturation.throughput * options.fraction
        alone = run_open_loop_sync(url, bodies, rate_per_s=rate, duration_s=options.duration_s, seed=1)
        with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
            file_id = http.post(
                "/v1/files",
                files={"file": ("batch.jsonl", _batch_file(texts, options.texts))},
                data={"purpose": "batch"},
            ).json()["id"]
            batch = http.post(
                "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/emotions"}
            ).json()
            _under_way(http, batch["id"])
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


def voice_notes() -> list[Clip]:
    """Real read speech (several speakers) and the JFK clip: the distinct recordings the voice-note
    lines cycle through."""
    return [
        Clip(f"note-{i}", wav_bytes(samples), samples.size / SAMPLE_RATE, text)
        for i, (text, samples) in enumerate(read_speech_clips())
    ]


def _upload(http: httpx.Client, name: str, data: bytes, purpose: str) -> str:
    answer = http.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    answer.raise_for_status()
    return answer.json()["id"]


def _create(http: httpx.Client, file_id: str, endpoint: str) -> str:
    answer = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint})
    answer.raise_for_status()
    return answer.json()["id"]


def _voice_batch_file(file_ids: list[str], count: int) -> bytes:
    lines = (
        {
            "custom_id": f"v{i}",
            "method": "POST",
            "url": "/v1/transcribe",
            "body": {"file_id": file_ids[i % len(file_ids)]},
        }
        for i in range(count)
    )
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def run_batch_bench(options: BatchBenchOptions) -> str:
    texts = journal_texts(256, seed=7)
    bodies = [json.dumps({"texts": [text]}).encode() for text in texts]
    notes = voice_notes()
    note_bodies, note_type = multipart_bodies(notes, "whisper")
    note_seconds = sum(clip.seconds for clip in notes) / len(notes)
    store = Path(f"/tmp/samo-bench-batch-{int(time.time())}")
    with gateway_stack(options.repository, settings=_settings(store, options)) as stack:
        url = f"{stack.gateway_url}/v1/emotions"
        text_sync = run_load_sync(url, bodies, concurrency=options.concurrency, duration_s=options.duration_s)
        audio_sync = run_load_sync(
            f"{stack.gateway_url}/v1/transcribe",
            note_bodies,
            concurrency=options.audio_concurrency,
            duration_s=options.duration_s,
            content_type=note_type,
        )
        rate = text_sync.throughput * options.fraction
        alone = run_open_loop_sync(url, bodies, rate_per_s=rate, duration_s=options.duration_s, seed=1)
        with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
            audio_ids = [_upload(http, f"{clip.name}.wav", clip.wav, "audio") for clip in notes]
            text_file = _upload(http, "texts.jsonl", _batch_file(texts, options.texts), "batch")
            voice_file = _upload(
                http, "notes.jsonl", _voice_batch_file(audio_ids, options.voice_notes), "batch"
            )
            started = time.monotonic()
            batches = {"texts": _create(http, text_file, "/v1/emotions")}
            if options.voice_notes:
                batches["voice notes"] = _create(http, voice_file, "/v1/transcribe")
            _under_way(http, batches["texts"])
            beside = run_open_loop_sync(url, bodies, rate_per_s=rate, duration_s=options.duration_s, seed=1)
            ended: dict[str, tuple[float, dict]] = {}
            while len(ended) < len(batches):
                if time.monotonic() - started > options.timeout_s:
                    for batch_id in batches.values():
                        http.post(f"/v1/batches/{batch_id}/cancel")
                    raise TimeoutError(f"the batches did not end within {options.timeout_s:.0f} s")
                for name, batch_id in batches.items():
                    batch = http.get(f"/v1/batches/{batch_id}").json()
                    if name not in ended and batch["status"] in ENDED:
                        ended[name] = (time.monotonic() - started, batch)
                time.sleep(0.5)
    rows: list[dict[str, object]] = [
        {
            "work": f"journal texts, synchronous (closed loop, c={options.concurrency})",
            "lines": text_sync.requests,
            "lines/s": text_sync.throughput,
            "audio s/s": None,
            "errors": text_sync.errors,
        },
        {
            "work": f"voice notes, synchronous (closed loop, c={options.audio_concurrency})",
            "lines": audio_sync.requests,
            "lines/s": audio_sync.throughput,
            "audio s/s": audio_sync.throughput * note_seconds,
            "errors": audio_sync.errors,
        },
    ]
    for name, (seconds, batch) in ended.items():
        counts = batch["request_counts"]
        rows.append(
            {
                "work": f"{name}, one batch ({batch['status']}, {seconds:.0f} s)",
                "lines": counts["total"],
                "lines/s": counts["completed"] / seconds,
                "audio s/s": counts["completed"] * note_seconds / seconds if name == "voice notes" else None,
                "errors": counts["failed"],
            }
        )
    interactive = [
        {
            "interactive load": f"{options.fraction:.0%} of the synchronous text rate, no batch",
            "offered req/s": alone.offered_rps,
            "p50 ms": alone.p50_ms,
            "p99 ms": alone.p99_ms,
            "errors": alone.errors,
        },
        {
            "interactive load": f"{options.fraction:.0%} of the synchronous text rate, batches running",
            "offered req/s": beside.offered_rps,
            "p50 ms": beside.p50_ms,
            "p99 ms": beside.p99_ms,
            "errors": beside.errors,
        },
    ]
    ratio = beside.p99_ms / alone.p99_ms if alone.p99_ms else float("nan")
    return (
        format_table(rows, ["work", "lines", "lines/s", "audio s/s", "errors"])
        + "\n\n"
        + format_table(interactive, ["interactive load", "offered req/s", "p50 ms", "p99 ms", "errors"])
        + f"\n\np99 with the batches / without: {ratio:.2f} (target: at most 1.2). Voice notes: "
        f"{len(notes)} distinct recordings, {note_seconds:.1f} s on average.\n"
    )
