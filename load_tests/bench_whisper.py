"""`samo bench whisper`: faster-whisper in-process, one file at a time, against this stack.

(a) faster-whisper in-process (`WhisperModel.transcribe`, int8, beam 5), one file at a time: what
    users run instead;
(b) gateway + Triton with the CTranslate2 backend (cross-request batching), at each concurrency;
(c) the same runs with the ONNX backend (tiny.en converted to Hugging Face, exported with optimum,
    decoded by SAMO's shared seq2seq engine), served by the same Triton.

Audio: real speech cut from the JFK clip (1 to 15 s), one long file (the clip six times with pauses,
72 s) and a 2-minute journal recording of many different sentences (espeak-ng, pauses of 0.2 to 2 s,
a sentence longer than a window, speech to the last sample). Audio seconds processed per wall second,
p50/p95 latency per file, and the word error rate on the files that have a reference text: a speed-up
that loses words does not count.
"""

from __future__ import annotations

import asyncio
import io
import logging
import platform
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from load_tests.bench_features import keep_section
from load_tests.loadgen import format_table
from load_tests.processes import gateway_stack
from samo.contracts.whisper import SAMPLE_RATE as RATE
from samo.evaluation.journal_speech import journal_recording, wav_bytes
from samo.evaluation.wer import word_error_rate

logger = logging.getLogger(__name__)

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
COLUMNS = ("system", "load", "audio_s_per_s", "p50_s", "p95_s", "files", "wer_jfk", "wer_long", "wer_journal")
# Clips with a reference text, and the column their word error rate goes to.
WER_COLUMNS = {"jfk": "wer_jfk", "long": "wer_long", "journal": "wer_journal"}


@dataclass(frozen=True)
class WhisperBenchOptions:
    jfk: Path = Path("tests/data/jfk.wav")
    # Long enough that the files still running when a row ends (up to 8 at c=8, the 124 s one among
    # them) do not hide much of the work: at 40 s, (b) at c=8 read 13.6 audio s/s against 24.5 at 90 s.
    duration_s: float = 90.0
    concurrency: tuple[int, ...] = (1, 8)
    output_dir: Path = Path("load_tests/results")


@dataclass(frozen=True)
class Clip:
    name: str
    wav: bytes
    seconds: float
    reference: str | None


def clips(jfk: Path) -> list[Clip]:
    with wave.open(str(jfk)) as clip:
        speech = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    pause = np.zeros(RATE, dtype=np.int16)
    cuts = [(0, 1.5), (0, 3), (2, 7), (4, 11), (0, 8), (3, 9)]
    result = [
        Clip(f"jfk[{a}:{b}]", wav_bytes(speech[int(a * RATE) : int(b * RATE)]), b - a, None) for a, b in cuts
    ]
    result.append(Clip("jfk", wav_bytes(speech), speech.size / RATE, JFK_TEXT))
    fifteen = np.concatenate([speech, pause, speech[: 3 * RATE]])
    result.append(Clip("jfk+3s", wav_bytes(fifteen), fifteen.size / RATE, None))
    long = np.concatenate([np.concatenate([speech, pause]) for _ in range(6)])
    result.append(Clip("long", wav_bytes(long), long.size / RATE, " ".join([JFK_TEXT] * 6)))
    journal = journal_recording(120, seed=1)
    result.append(Clip("journal", journal.wav_bytes(), journal.duration, journal.text))
    return result


def _row(
    system: str, load: str, done: list[tuple[Clip, float, str]], wall: float, wers: dict[str, float]
) -> dict:
    """Throughput and latency from the timed run, and the system's word error rates."""
    latencies = sorted(latency for _, latency, _ in done)
    return {
        "system": system,
        "load": load,
        "audio_s_per_s": sum(clip.seconds for clip, _, _ in done) / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": float(np.percentile(latencies, 95)),
        "files": len(done),
        **wers,
    }


def _word_error_rates(
    done: list[tuple[Clip, float, str]], mix: list[Clip], transcribe: Callable[[Clip], str]
) -> dict[str, float]:
    """Word error rate of each clip with a reference, as the timed run transcribed it, or transcribed
    once more when the run's window ended before it finished (long files at high concurrency)."""
    texts = {clip.name: text for clip, _, text in done}
    return {
        WER_COLUMNS[clip.name]: word_error_rate(
            clip.reference, texts[clip.name] if clip.name in texts else transcribe(clip)
        )
        for clip in mix
        if clip.reference and clip.name in WER_COLUMNS
    }


def measure_faster_whisper(model_dir: Path, mix: list[Clip], options: WhisperBenchOptions) -> dict:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    done = []
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < options.duration_s or index < len(mix):
        clip = mix[index % len(mix)]
        began = time.perf_counter()
        segments, _ = model.transcribe(io.BytesIO(clip.wav), beam_size=5, language="en")
        text = " ".join(s.text.strip() for s in segments)
        done.append((clip, time.perf_counter() - began, text))
        index += 1
    wall = time.perf_counter() - start

    def transcribe(clip: Clip) -> str:
        segments, _ = model.transcribe(io.BytesIO(clip.wav), beam_size=5, language="en")
        return " ".join(s.text.strip() for s in segments)

    return _row(
        "(a) faster-whisper in-process", "one at a time", done, wall, _word_error_rates(done, mix, transcribe)
    )


async def _closed_loop(
    url: str, mix: list[Clip], concurrency: int, duration_s: float, model: str
) -> tuple[list, float]:
    """Files finished inside the window, and the window: a file still running at the end is not
    counted, so the tail of a long file does not stretch the denominator."""
    done: list[tuple[Clip, float, str]] = []
    start = time.perf_counter()

    async def worker(offset: int) -> None:
        async with httpx.AsyncClient(timeout=600) as client:
            index = offset
            while time.perf_counter() - start < duration_s:
                clip = mix[index % len(mix)]
                began = time.perf_counter()
                response = await client.post(
                    url, files={"file": (f"{clip.name}.wav", clip.wav)}, data={"model": model}
                )
                response.raise_for_status()
                if time.perf_counter() - start <= duration_s:
                    done.append((clip, time.perf_counter() - began, response.json()["text"]))
                index += 1

    await asyncio.gather(*(worker(i * len(mix) // concurrency) for i in range(concurrency)))
    return done, duration_s


def _transcribe_once(url: str, clip: Clip, model: str) -> str:
    response = httpx.post(
        url, files={"file": (f"{clip.name}.wav", clip.wav)}, data={"model": model}, timeout=600
    )
    response.raise_for_status()
    return response.json()["text"]


# (system label, model name in the repository), measured in this order.
STACK_SYSTEMS = (
    ("(b) gateway + Triton, CTranslate2", "whisper"),
    ("(c) gateway + Triton, ONNX", "whisper_onnx"),
)


def measure_stack(repository: Path, mix: list[Clip], options: WhisperBenchOptions) -> list[dict]:
    rows = []
    with gateway_stack(repository) as stack:
        url = f"{stack.gateway_url}/v1/transcribe"
        for system, model in STACK_SYSTEMS:
            asyncio.run(_closed_loop(url, mix[:2], 1, 0.1, model))  # warm-up
            for concurrency in options.concurrency:
                done, wall = asyncio.run(_closed_loop(url, mix, concurrency, options.duration_s, model))
                wers = _word_error_rates(done, mix, lambda clip, m=model: _transcribe_once(url, clip, m))
                rows.append(_row(system, f"c={concurrency}", done, wall, wers))
                logger.info("%s c=%d: %.1f audio s/s", model, concurrency, rows[-1]["audio_s_per_s"])
    return rows


def run_whisper_benchmark(options: WhisperBenchOptions) -> str:
    from exporters.whisper.ct2_convert import convert_ct2_whisper
    from exporters.whisper.ct2_export import WhisperCt2ExportOptions, embedded_model_dir, export_whisper_ct2
    from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx

    mix = clips(options.jfk)
    rows = [measure_faster_whisper(embedded_model_dir(), mix, options)]
    with tempfile.TemporaryDirectory(prefix="samo-bench-whisper-") as workdir:
        repository = Path(workdir) / "repository"
        export_whisper_ct2(WhisperCt2ExportOptions(repository=repository))
        hf_dir = Path(workdir) / "tiny-en-hf"
        convert_ct2_whisper(embedded_model_dir(), hf_dir)
        export_whisper_onnx(WhisperOnnxExportOptions(model=hf_dir, repository=repository))
        rows += measure_stack(repository, mix, options)
    baseline = rows[0]["audio_s_per_s"]
    summary = [
        f"- {row['system']} {row['load']}: {row['audio_s_per_s'] / baseline:.2f}x (a)"
        for row in rows[1:]
        if "audio_s_per_s" in row
    ]
    header = (
        f"# Whisper benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.machine()}; Whisper tiny.en, beam 5, English (CTranslate2 int8, ONNX float32); {len(mix)} files "
        f"({', '.join(f'{c.seconds:.1f}' for c in mix)} s) cycled for {options.duration_s:.0f} s per row.\n\n"
    )
    report = header + format_table(rows, COLUMNS) + "\n" + "\n".join(summary) + "\n"
    options.output_dir.mkdir(parents=True, exist_ok=True)
    path = options.output_dir / "whisper.md"
    path.write_text(keep_section(path.read_text() if path.exists() else "", report))
    return report
