"""Where a Whisper stack's time goes per audio second: the CPU of each process, the windows and repairs
the gateway sent, and, sampled with py-spy, the stages inside the gateway and inside Triton's stubs.

CPU seconds per process come from `cpu_use`; windows and repairs from the gateway's
`samo_whisper_windows_total`; the stage split from py-spy's raw stacks of the gateway (threads on a core:
decoding, VAD and planning run in worker threads) and of the stubs (with idle samples: CTranslate2
computes on its own threads while the stub's Python thread waits in `encode`, `generate` or `align`, so
the wait is where the stub's time goes). Stages are named by the first marker found in a sample's
stack, innermost frame first; a marker is looked for in the frame's name and in its source line (a call
into CTranslate2 has no Python frame of its own: `self.model.generate(` is the line that waits).
"""

from __future__ import annotations

import linecache
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from load_tests.bench_profile import record

# (stage, markers): a sample belongs to the first stage with a marker in one of its frames, looked up
# from the innermost frame out.
GATEWAY_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("VAD (Silero)", ("get_speech_timestamps", "speech_regions")),
    ("audio decode and resample", ("gateway/audio/",)),
    ("window planning", ("transcription/planner.py", "transcription/windows.py")),
    ("coverage checks", ("transcription/coverage.py", "_place (")),
    ("Triton client", ("triton_client.py", "tritonclient", "grpc/aio")),
    ("HTTP and upload", ("starlette", "fastapi", "multipart", "uvicorn", "h11")),
)
STUB_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("log-mel features", ("feature_extractor.py", "_mel (", "log_mel_windows (")),
    # The ONNX backend (SAMO's engine): the encoder and the decoder's steps run in ONNX Runtime, the
    # cache kept per beam and the search itself in numpy.
    ("ONNX encoder", ("encode_features (",)),
    ("ONNX decoder steps", ("OnnxDecoderSession.step (", "OnnxDecoderSession.start")),
    (
        "decoder cache bookkeeping",
        ("OnnxDecoderSession.keep (", "OnnxDecoderSession.reorder_beams (", "_store ("),
    ),
    ("beam search and Whisper rules", ("generation/search.py", "generation/processors.py")),
    ("word alignment", ("whisper_words.py", "_add_words (")),
    ("gaps decoded again (same encoder output)", ("_cover_gaps (",)),
    ("CTranslate2 encode", (".encode(",)),
    ("CTranslate2 generate", (".generate(", ".detect_language(")),
    ("segments and JSON", ("segments_with_tokens", "json_response", "dumps (", ".transcript (")),
    ("reading requests (IPC)", ("read_window", "self.input(")),
)
OTHER = "other"
RATE_HZ = 100
_FRAME = re.compile(r"^.* \((?P<path>.+):(?P<line>\d+)\)$")


def _with_source(frame: str, sources: Sequence[Path]) -> str:
    """The frame's name and its source line, when the file can be read: as named, or under one of
    `sources` (a stub names its `model.py` relative to its model's version folder, which is there while
    the stack runs)."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    for folder in (Path(), *sources):
        if line := linecache.getline(str(folder / found["path"]), int(found["line"])).strip():
            return f"{frame} {line}"
    return frame


def window_counts(gateway_url: str) -> Counter[str]:
    """`samo_whisper_windows_total` by kind, summed over models, as the gateway counts them now."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=30).text
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "samo_whisper_windows_total":
                counts[sample.labels["kind"]] += int(sample.value)
    return counts


def stage_of(
    frames: Sequence[str], stages: Sequence[tuple[str, tuple[str, ...]]], sources: Sequence[Path] = ()
) -> str:
    for frame in (_with_source(frame, sources) for frame in reversed(frames)):
        for name, markers in stages:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def split(
    raw: str,
    stages: Sequence[tuple[str, tuple[str, ...]]],
    *,
    sources: Sequence[Path] = (),
    within: str | None = None,
) -> Counter[str]:
    """Samples per stage from py-spy's raw output (`frame;frame;... count` per line); with `within`,
    only the samples with a frame of that function (a stub's `execute`: its other threads only wait)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and count.isdigit() and (within is None or any(within in frame for frame in frames)):
            counts[stage_of(frames, stages, sources)] += int(count)
    return counts


def sampled_split(
    gateway_pid: int, triton_pid: int, seconds: float, drive: Callable[[float], object], model_dir: Path
) -> dict[str, Counter[str]]:
    """Samples per stage of the gateway (its worker processes included) and of the Whisper stubs while
    `drive(seconds)` runs the load; `model_dir`: the Whisper model's folder in the repository."""
    stubs = [child.pid for child in psutil.Process(triton_pid).children(recursive=True)]
    with tempfile.TemporaryDirectory(prefix="samo-whisper-split-") as workdir:
        folder = Path(workdir)
        load = threading.Thread(target=drive, args=(seconds,))
        load.start()
        spies = {"gateway": [record(gateway_pid, seconds, RATE_HZ, folder / "gateway.txt", "raw")]}
        spies["stubs"] = [
            record(pid, seconds, RATE_HZ, folder / f"stub-{pid}.txt", "raw", subprocesses=False, idle=True)
            for pid in stubs
        ]
        for running in spies.values():
            for spy in running:
                spy.communicate(timeout=seconds + 60)
        load.join()
        result = {"gateway": split(_read(folder / "gateway.txt"), GATEWAY_STAGES), "stubs": Counter[str]()}
        sources = sorted(path for path in model_dir.iterdir() if path.is_dir())
        for pid in stubs:
            stacks = _read(folder / f"stub-{pid}.txt")
            result["stubs"] += split(stacks, STUB_STAGES, sources=sources, within="Backend.execute")
    return result


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def split_rows(part: str, counts: Counter[str], cpu_ms_per_audio_s: float | None) -> list[dict[str, object]]:
    """One row per stage: its share of the part's samples, and that share of the part's CPU per audio
    second when known."""
    total = sum(counts.values())
    rows = []
    for stage, samples in counts.most_common():
        share = samples / total if total else 0.0
        row: dict[str, object] = {"part": part, "stage": stage, "share_pct": 100 * share}
        if cpu_ms_per_audio_s is not None:
            row["cpu_ms_per_audio_s"] = share * cpu_ms_per_audio_s
        rows.append(row)
    return rows
