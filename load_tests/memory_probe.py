"""The gateway's memory while it transcribes one long recording: idle and peak RSS, and the time taken.

    python -m load_tests.memory_probe --repository model_repository [--minutes 59] [--kind silence]

starts Triton and the gateway (separate processes, free ports), sends one short clip so the audio
libraries are loaded, reads the gateway's RSS (idle), resets the kernel's high-water mark of its RSS
(`/proc/<pid>/clear_refs`, so the peak is exact rather than sampled), uploads the recording to
`/v1/transcribe` and reads the high-water mark again (peak). Recordings are built here:

- `silence`: a 16 kHz mono FLAC of digital silence (59 minutes: about 0.6 MB), the decode-bomb shape;
- `sparse`: silence with the JFK clip every `SPARSE_EVERY_S` seconds (windows, repairs and chunk cuts
  all happen, in little Whisper time);
- `speech`: journal sentences spoken by espeak-ng (`samo.evaluation.journal_speech`) back to back,
  Ogg/Opus at 24 kbit/s (59 minutes: about 11 MB, under the 25 MB upload limit).
"""

from __future__ import annotations

import argparse
import io
import os
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import psutil

from load_tests.processes import gateway_stack

RATE = 16000
SPARSE_EVERY_S = 120.0
JFK_WAV = Path(__file__).resolve().parent.parent / "tests" / "data" / "jfk.wav"
KINDS = ("silence", "sparse", "speech")


@dataclass(frozen=True)
class MemoryFigures:
    kind: str
    minutes: float
    file_mb: float
    idle_mb: float
    peak_mb: float
    seconds: float
    status: int
    segments: int

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.idle_mb


def jfk_samples() -> np.ndarray:
    with wave.open(str(JFK_WAV)) as clip:
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16).astype(np.float32) / 32768


def encode(
    blocks: Iterator[np.ndarray], codec: str, container: str, rate: int = RATE, **options: str
) -> bytes:
    """Mono float32 blocks at 16 kHz, encoded block by block (the whole recording is never in memory)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream), f"{codec} is not an audio codec"
        stream.codec_context.time_base = Fraction(1, rate)
        if options:
            stream.codec_context.options = options
        resampler = av.AudioResampler(
            format=stream.codec_context.format,
            layout="mono",
            rate=rate,
            frame_size=stream.codec_context.frame_size,
        )
        pts = 0
        for block in blocks:
            if not block.size:
                continue
            frame = av.AudioFrame.from_ndarray(
                block.reshape(1, -1).astype(np.float32), format="flt", layout="mono"
            )
            frame.sample_rate = RATE
            for piece in resampler.resample(frame):
                piece.pts, piece.time_base = pts, Fraction(1, rate)
                pts += piece.samples
                output.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            piece.pts, piece.time_base = pts, Fraction(1, rate)
            pts += piece.samples
            output.mux(stream.encode(piece))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def _silence_blocks(seconds: float) -> Iterator[np.ndarray]:
    total = int(seconds * RATE)
    for start in range(0, total, 60 * RATE):
        yield np.zeros(min(60 * RATE, total - start), dtype=np.float32)


def _sparse_blocks(seconds: float) -> Iterator[np.ndarray]:
    clip = jfk_samples()
    gap = np.zeros(int(SPARSE_EVERY_S * RATE) - clip.size, dtype=np.float32)
    total, written = int(seconds * RATE), 0
    while written < total:
        for piece in (gap, clip):
            piece = piece[: total - written]
            written += piece.size
            yield piece


def _speech_blocks(seconds: float) -> Iterator[np.ndarray]:
    from samo.evaluation.journal_speech import journal_recording

    total, written, seed = int(seconds * RATE), 0, 0
    while written < total:
        spoken = journal_recording(300, seed=seed).samples
        piece = np.concatenate([spoken, np.zeros(RATE, dtype=np.float32)])[: total - written]
        written += piece.size
        seed += 1
        yield piece


def recording(kind: str, minutes: float) -> tuple[str, bytes]:
    """A file name and the bytes of a recording of `kind` (see the module docstring)."""
    seconds = minutes * 60
    if kind == "silence":
        return "silence.flac", encode(_silence_blocks(seconds), "flac", "flac")
    if kind == "sparse":
        return "sparse.flac", encode(_sparse_blocks(seconds), "flac", "flac")
    if kind == "speech":
        return "speech.ogg", encode(_speech_blocks(seconds), "libopus", "ogg", 48000, b="24000")
    raise ValueError(f"kind: one of {', '.join(KINDS)}")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of the process's RSS (VmHWM), or None where /proc lacks it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+: `echo 5 > /proc/<pid>/clear_refs`)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_upload(
    url: str, pid: int, name: str, data: bytes, *, kind: str, minutes: float
) -> tuple[MemoryFigures, dict]:
    """Idle RSS, then the peak RSS of process `pid` while `url` transcribes the upload; and the answer."""
    with httpx.Client(base_url=url, timeout=3600) as client:

        def post_warm() -> httpx.Response:
            return client.post("/v1/transcribe", files={"file": ("warm.wav", JFK_WAV.read_bytes())})

        warm = post_warm()
        for _ in range(29):  # 503 while a model is (re)loaded: wait as Retry-After says, 30 tries in all
            if warm.status_code != 503:
                break
            time.sleep(float(warm.headers.get("retry-after", "2")))
            warm = post_warm()
        warm.raise_for_status()
        time.sleep(1.0)  # let the warm-up's buffers go back before idle is read
        idle = rss_mb(pid)
        exact = reset_peak_rss(pid)
        sampled = idle
        done = threading.Event()

        def sample() -> None:  # where VmHWM cannot be reset: the highest of frequent samples
            nonlocal sampled
            while not done.wait(0.02):
                sampled = max(sampled, rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        response = client.post("/v1/transcribe", files={"file": (name, data)})
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    peak = peak_rss_mb(pid) if exact else None
    answer = response.json()
    segments = len(answer.get("segments", [])) if response.status_code == 200 else 0
    figures = MemoryFigures(
        kind=kind,
        minutes=minutes,
        file_mb=len(data) / 2**20,
        idle_mb=idle,
        peak_mb=max(peak or 0.0, sampled),
        seconds=seconds,
        status=response.status_code,
        segments=segments,
    )
    return figures, answer


def gateway_pid() -> int:
    """The gateway process this process started (`python -m samo_cli gateway`)."""
    for child in psutil.Process(os.getpid()).children(recursive=True):
        if "samo_cli" in child.cmdline() and "gateway" in child.cmdline():
            return child.pid
    raise RuntimeError("no gateway process found among this process's children")


def table(rows: list[MemoryFigures]) -> str:
    lines = [
        "| file | duration | size | idle RSS | peak RSS | growth | time | status | segments |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.kind} | {r.minutes:.0f} min | {r.file_mb:.1f} MB | {r.idle_mb:.0f} MB | {r.peak_mb:.0f} MB "
            f"| {r.growth_mb:.0f} MB | {r.seconds:.1f} s | {r.status} | {r.segments} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--minutes", type=float, default=59.0)
    parser.add_argument("--kind", choices=KINDS, action="append", help="repeatable; default: all three")
    args = parser.parse_args()
    files = {kind: recording(kind, args.minutes) for kind in args.kind or KINDS}
    rows = []
    with gateway_stack(args.repository) as stack:
        pid = gateway_pid()
        for kind, (name, data) in files.items():
            figures, _ = measure_upload(stack.gateway_url, pid, name, data, kind=kind, minutes=args.minutes)
            rows.append(figures)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
