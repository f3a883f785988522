"""Peers on the same checkpoint and machine (issue 20): Infinity and LitServe beside gateway + Triton.

Each system serves the same fp32 sequence-classification checkpoint on this machine's cores, one text
per request, driven by the same client (wrk, one thread, the benchmark's journal texts) at the same
closed-loop concurrencies; before its load, each answers every journal text once, alone, and its
scores are compared with the stack's (within `SCORE_TOLERANCE`: a peer that disagrees is reported so,
its rows kept).

- Infinity (`infinity-emb`, in its own environment, `make peers-env`: its pins conflict with ours),
  `/classify`, at its default batch size, with each CPU engine: `optimum` (ONNX Runtime) on the very
  graph Triton serves, and `torch` (PyTorch) on the checkpoint; the better one is the peer.
- LitServe (`litserve`, `load_tests/litserve_peer.py`): its batching (`max_batch_size`,
  `batch_timeout`) over ONNX Runtime on the graph Triton serves, so the two differ in serving only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from load_tests.processes import RunningStack, free_port, gateway_stack, server_process
from load_tests.wrk import run_wrk
from samo.cpus import usable_cores

logger = logging.getLogger(__name__)

PEER_CONCURRENCY = (32, 256)
SCORE_TOLERANCE = 1e-4
TARGET_RATIO = 3.0
"""Issue 20: the stack at least 3x each peer's throughput at every concurrency."""
STACK = "gateway + Triton"
INFINITY_VENV = Path(".venv-peers/infinity")
INFINITY_ENGINES = ("optimum", "torch")
INFINITY_BATCH_SIZE = 32
"""Infinity's default `--batch-size`, stated so the report does not depend on it."""
INFINITY_MODEL = "emotion"
LITSERVE_MAX_BATCH = 32
"""As Triton's largest preferred batch and Infinity's batch: the three batch alike."""
LITSERVE_BATCH_TIMEOUT_S = 0.005
LITSERVE_ROUTE = "/v1/emotions"
PEER_COLUMNS = ("model", "system", "load", "throughput_per_s", "p50_ms", "p99_ms", "errors", "seconds")
CYCLES = 3
WRK_TIMEOUT_S = 120.0
"""A slow peer at c=256 keeps a request tens of seconds: a wait, not an error."""
PEER_FAILURES = (RuntimeError, httpx.HTTPError, KeyError, ValueError)
"""Not starting (RuntimeError from `server_process`), wrk failing, an error status, an answer of
another shape."""
MAX_DRAIN_S = 30.0
START_TIMEOUT_S = 300.0
"""Infinity's optimum engine optimizes the graph again at start: a minute or more on 2 cores."""


@dataclass(frozen=True)
class PeerOptions:
    concurrency: tuple[int, ...] = PEER_CONCURRENCY
    duration_s: float = 8.0
    """The shortest row; longer where a connection's turn is long (`measured_seconds`)."""
    max_duration_s: float = 40.0
    warmup_s: float = 3.0
    infinity_venv: Path = INFINITY_VENV
    infinity_engines: tuple[str, ...] = INFINITY_ENGINES


@dataclass(frozen=True)
class Endpoint:
    """One served classifier: where to send a text, and how to read its scores back."""

    system: str
    url: str
    body: Callable[[str], dict[str, Any]]
    scores: Callable[[Mapping[str, Any]], Mapping[str, float]]
    """Label -> score of the one text a request carried."""


def scores_by_label(scores: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    """`scores` in the order of `labels`; a label missing from the answer is an error, not a zero."""
    missing = [label for label in labels if label not in scores]
    if missing:
        raise ValueError(f"answer has no score for {', '.join(missing)}")
    return np.array([scores[label] for label in labels], dtype=np.float64)


def stack_body(text: str) -> dict[str, Any]:
    return {"texts": [text]}


def stack_scores(answer: Mapping[str, Any]) -> Mapping[str, float]:
    (result,) = answer["results"]
    return result["scores"]


def infinity_body(text: str) -> dict[str, Any]:
    # raw_scores: Infinity returns its pipeline's scores either way (0.0.77 ignores it for /classify);
    # sent so that a release that honours it is asked for scores, not a re-normalization of them.
    return {"input": [text], "model": INFINITY_MODEL, "raw_scores": True}


def infinity_scores(answer: Mapping[str, Any]) -> Mapping[str, float]:
    (labelled,) = answer["data"]
    return {item["label"]: item["score"] for item in labelled}


def litserve_body(text: str) -> dict[str, Any]:
    return {"text": text}


def litserve_scores(answer: Mapping[str, Any]) -> Mapping[str, float]:
    return answer["scores"]


@dataclass(frozen=True)
class ScoreAgreement:
    model: str
    system: str
    texts: int
    max_abs_diff: float
    """NaN when a score could not be compared (NaN in an answer)."""
    tolerance: float = SCORE_TOLERANCE

    @property
    def agrees(self) -> bool:
        return not math.isnan(self.max_abs_diff) and self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        verdict = "agrees" if self.agrees else "DISAGREES"
        return (
            f"- {self.model}: {self.system} {verdict} with the stack on {self.texts} journal texts: max |score "
            f"difference| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"
        )


def compare_scores(
    model: str, system: str, reference: np.ndarray, scores: np.ndarray, tolerance: float = SCORE_TOLERANCE
) -> ScoreAgreement:
    """`scores` against the stack's `reference` (texts x labels, same label order)."""
    if reference.shape != scores.shape:
        raise ValueError(f"{system}: scores of shape {scores.shape}, the stack's {reference.shape}")
    diff = np.abs(scores - reference)
    return ScoreAgreement(model, system, len(reference), float(diff.max()) if diff.size else 0.0, tolerance)


def endpoint_scores(endpoint: Endpoint, texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Every text alone (a batch of one, as at c=1), one request at a time: texts x labels."""
    rows = []
    with httpx.Client(timeout=60) as client:
        for text in texts:
            answer = client.post(endpoint.url, json=endpoint.body(text))
            answer.raise_for_status()
            rows.append(scores_by_label(endpoint.scores(answer.json()), labels))
    return np.stack(rows)


def measured_seconds(clients: int, warm_throughput: float, options: PeerOptions) -> float:
    """At least `CYCLES` turns of every connection: at c=256 a model answering 25 texts/s keeps each
    request about 10 s, and a shorter row would count only the first turn's shorter waits."""
    turn_s = clients / max(warm_throughput, 1e-3)
    return min(max(options.duration_s, CYCLES * turn_s), options.max_duration_s)


def drain(clients: int, throughput: float) -> None:
    """wrk closes its connections mid-request; a server that still computes their answers (none of
    the three cancels a started batch) would charge that work to the next row: wait it out."""
    time.sleep(min(clients / max(throughput, 1e-3), MAX_DRAIN_S) + 0.5)


def load_rows(model: str, endpoint: Endpoint, texts: Sequence[str], options: PeerOptions) -> list[dict]:
    """wrk at each concurrency, one text per request: a warm-up at that concurrency (which also sizes
    the row), then the row, each followed by a drain."""
    bodies = [json.dumps(endpoint.body(text)).encode() for text in texts]
    rows = []
    for clients in options.concurrency:
        warm = run_wrk(
            endpoint.url, bodies, concurrency=clients, duration_s=options.warmup_s, timeout_s=WRK_TIMEOUT_S
        )
        drain(clients, warm.throughput)
        seconds = measured_seconds(clients, warm.throughput, options)
        result = run_wrk(
            endpoint.url, bodies, concurrency=clients, duration_s=seconds, timeout_s=WRK_TIMEOUT_S
        )
        drain(clients, result.throughput)
        rows.append(
            {
                "model": model,
                "system": endpoint.system,
                "load": f"c={clients}",
                "throughput_per_s": result.throughput,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "errors": result.errors,
                "seconds": result.duration_s,
            }
        )
        logger.info("%s %s c=%d: %.1f texts/s", model, endpoint.system, clients, result.throughput)
    return rows


def stack_endpoint(stack: RunningStack) -> Endpoint:
    return Endpoint(STACK, f"{stack.gateway_url}/v1/emotions", stack_body, stack_scores)


def peer_checkpoint(checkpoint: Path, served_graph: Path | None, folder: Path) -> Path:
    """The checkpoint's files and the served ONNX graph in one folder (links): Infinity's optimum
    engine reads `*.onnx` beside the config and tokenizer, its torch engine the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in checkpoint.iterdir():
        (folder / path.name).symlink_to(path.resolve())
    if served_graph is not None:
        (folder / served_graph.name).symlink_to(served_graph.resolve())
    return folder


@contextlib.contextmanager
def infinity_server(
    folder: Path, engine: str, venv: Path, cache: Path, *, device: str = "cpu", dtype: str = "float32"
) -> Iterator[Endpoint]:
    """Infinity from `venv` on `folder`; `device` cuda and `dtype` float16 for the GPU check's peer row."""
    executable = venv / "bin" / "infinity_emb"
    if not executable.exists():
        raise RuntimeError(f"{executable} is missing: run `make peers-env`")
    port = free_port()
    # The model as "." from inside its folder: for a local folder Infinity 0.0.78's optimum engine names
    # the ONNX file by its path from the working directory, which optimum then looks for inside the
    # folder (an absolute folder fails: "Could not find any ONNX files with target file name ...").
    command = [str(executable.resolve()), "v2", "--model-id", ".", "--served-model-name", INFINITY_MODEL]
    command += ["--engine", engine, "--device", device, "--dtype", dtype]
    command += ["--batch-size", str(INFINITY_BATCH_SIZE)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = {
        # No hub: the model is a local folder; the optimized graph goes to this run's folder.
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cache),
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    base = f"http://127.0.0.1:{port}"
    with server_process(command, ready_url=f"{base}/health", env=env, timeout_s=START_TIMEOUT_S, cwd=folder):
        yield Endpoint(f"Infinity {engine}", f"{base}/classify", infinity_body, infinity_scores)


@contextlib.contextmanager
def litserve_server(checkpoint: Path, served_graph: Path) -> Iterator[Endpoint]:
    port = free_port()
    command = [sys.executable, "-m", "load_tests.litserve_peer", "--checkpoint", str(checkpoint)]
    command += ["--graph", str(served_graph), "--port", str(port)]
    command += ["--max-batch-size", str(LITSERVE_MAX_BATCH), "--batch-timeout", str(LITSERVE_BATCH_TIMEOUT_S)]
    base = f"http://127.0.0.1:{port}"
    with server_process(command, ready_url=f"{base}/health", timeout_s=START_TIMEOUT_S):
        yield Endpoint("LitServe", f"{base}{LITSERVE_ROUTE}", litserve_body, litserve_scores)


@dataclass
class PeerMeasurements:
    rows: list[dict] = field(default_factory=list)
    agreements: list[ScoreAgreement] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """A peer that did not start or answer, as report lines: the other systems' rows still count."""

    def extend(self, other: PeerMeasurements) -> None:
        self.rows += other.rows
        self.agreements += other.agreements
        self.failures += other.failures


def _measure(
    model: str,
    endpoint: Endpoint,
    texts: Sequence[str],
    labels: Sequence[str],
    reference: np.ndarray,
    options: PeerOptions,
    measured: PeerMeasurements,
) -> None:
    scores = endpoint_scores(endpoint, texts, labels)
    measured.agreements.append(compare_scores(model, endpoint.system, reference, scores))
    measured.rows += load_rows(model, endpoint, texts, options)


@dataclass(frozen=True)
class PeerModel:
    """What the three systems serve: one checkpoint, and the stack's export of it."""

    name: str
    checkpoint: Path
    """The sequence-classification checkpoint (transformers folder)."""
    repository: Path
    """The model repository exported from it, for the stack."""
    served_graph: Path
    """The ONNX graph the stack's Triton model runs (fp32)."""
    labels: tuple[str, ...]


def measure_peers(
    model: PeerModel, texts: Sequence[str], workdir: Path, options: PeerOptions
) -> PeerMeasurements:
    """The stack, then each Infinity engine, then LitServe, back to back, each alone on the machine."""
    measured = PeerMeasurements()
    with gateway_stack(model.repository) as stack:
        endpoint = stack_endpoint(stack)
        reference = endpoint_scores(endpoint, texts, model.labels)
        measured.rows += load_rows(model.name, endpoint, texts, options)
    folder = peer_checkpoint(model.checkpoint, model.served_graph, workdir / f"{model.name}-peer-checkpoint")
    # One cache per model: Infinity keeps its optimized graph under the cache by model id, which is "."
    # for every local folder (`infinity_server`).
    cache = workdir / f"{model.name}-hf-cache"
    peers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Endpoint]]]] = [
        (
            f"Infinity {engine}",
            functools.partial(infinity_server, folder, engine, options.infinity_venv, cache),
        )
        for engine in options.infinity_engines
    ]
    peers.append(("LitServe", functools.partial(litserve_server, model.checkpoint, model.served_graph)))
    for system, serve in peers:
        try:
            with serve() as endpoint:
                _measure(model.name, endpoint, texts, model.labels, reference, options, measured)
        except PEER_FAILURES as error:  # a third-party server's failure is a result, not the run's end
            logger.warning("%s %s failed: %s", model.name, system, error)
            measured.failures.append(f"- {model.name}: {system} failed, rows missing: {error}")
    return measured


def _throughput(rows: Sequence[dict], model: str, system: str, load: str) -> float | None:
    found = [
        r["throughput_per_s"] for r in rows if (r["model"], r["system"], r["load"]) == (model, system, load)
    ]
    return found[0] if found else None


def target_lines(model: str, rows: Sequence[dict], concurrency: Sequence[int]) -> list[str]:
    """Stack / peer throughput at each concurrency against the 3x target; for Infinity, its best engine
    at that concurrency."""
    lines = []
    infinity = sorted(
        {r["system"] for r in rows if r["model"] == model and r["system"].startswith("Infinity")}
    )
    for clients in concurrency:
        load = f"c={clients}"
        stack = _throughput(rows, model, STACK, load)
        if not stack:
            continue
        peers = {system: _throughput(rows, model, system, load) for system in (*infinity, "LitServe")}
        best_infinity = max(
            (system for system in infinity if peers[system]), key=lambda s: peers[s] or 0.0, default=None
        )
        for system in (best_infinity, "LitServe"):
            peer = peers.get(system) if system else None
            if not system or not peer:
                continue
            ratio = stack / peer
            verdict = "met" if ratio >= TARGET_RATIO else "missed"
            lines.append(
                f"- {model} at {load}: the stack {stack:.1f} texts/s = {ratio:.2f}x {system} ({peer:.1f}) "
                f"(target {TARGET_RATIO:g}x: {verdict})"
            )
    return lines


def peers_note() -> str:
    return (
        f"{usable_cores()} usable cores for every system. Triton: 1 instance x 2 ONNX Runtime threads; "
        f"Infinity at batch size {INFINITY_BATCH_SIZE} (its default), its engines' own thread defaults; "
        f"LitServe: one worker, ONNX Runtime threads = usable cores, max_batch_size {LITSERVE_MAX_BATCH}, "
        f"batch_timeout {LITSERVE_BATCH_TIMEOUT_S * 1000:g} ms."
    )
