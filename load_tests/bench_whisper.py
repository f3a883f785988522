"""`samo bench whisper`: faster-whisper in-process, one file at a time, against this stack.

(a) faster-whisper in-process (`WhisperModel.transcribe`, int8, beam 5), one file at a time: what
    users run instead;
(a') faster-whisper's own `BatchedInferencePipeline` (VAD chunks of one file decoded as one batch of
    `batch_size`, int8, beam 5), one file at a time: the like-for-like batched competitor;
(b) gateway + Triton with the CTranslate2 backend (cross-request batching), at each concurrency;
(c) the same runs with the ONNX backend (tiny.en converted to Hugging Face, exported with optimum,
    decoded by SAMO's shared seq2seq engine), served by the same Triton.

Audio: real speech cut from the JFK clip (1 to 15 s), one long file (the clip six times with pauses,
72 s) and a 2-minute journal recording of many different sentences (espeak-ng, pauses of 0.2 to 2 s,
a sentence longer than a window, speech to the last sample). Audio seconds processed per wall second,
p50/p95 latency per file, and the word error rate on the files that have a reference text: a speed-up
that loses words does not count. Every stack row carries Triton's view (queue and compute per window,
mean batch); then the CTranslate2 stack runs open loop (Poisson arrivals of the same files, latency
from the due time) at fractions of its best closed-loop file rate. Plots: audio seconds per second
against concurrency, and latency distributions.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import platform
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from load_tests.bench_features import keep_section
from load_tests.bench_report import OPEN_LOOP_FRACTIONS, markdown_images
from load_tests.cpu_use import CPU_COLUMNS, StackProcesses, cpu_use
from load_tests.loadgen import LoadResult, format_table, run_open_loop_sync
from load_tests.processes import RunningStack, gateway_stack
from load_tests.triton_view import VIEW_COLUMNS, watch
from load_tests.whisper_split import sampled_split, split_rows, window_counts
from samo.contracts.whisper import SAMPLE_RATE as RATE
from samo.evaluation.journal_speech import journal_recording, wav_bytes
from samo.evaluation.read_speech import JFK_TEXT, read_speech_recording
from samo.evaluation.wer import word_error_rate

logger = logging.getLogger(__name__)

COLUMNS = ("system", "load", "audio_s_per_s", "p50_s", "p95_s", "files", "errors")
# Per stack row: cores busy, CPU ms per audio second of each part, windows and repairs per audio minute.
COST_COLUMNS = ("system", "load", *CPU_COLUMNS, "windows_per_audio_min", "repairs_per_audio_min")
SPLIT_COLUMNS = ("system", "part", "stage", "share_pct", "cpu_ms_per_audio_s")
OPEN_COLUMNS = ("system", "load", "files_per_s", "p50_s", "p90_s", "p99_s", "errors", "unfinished")
TRITON_COLUMNS = ("system", "load", *VIEW_COLUMNS)
PLAIN = "(a) faster-whisper in-process"
BATCHED = "(a') faster-whisper BatchedInferencePipeline"
# The gateway's health probe reloads a model that misses two probes running; at c=8 on 2 cores one
# batch of 30 s windows can take longer than the default 10 s, and a reload in the middle of a row
# fails every file in flight. The benchmark measures throughput, so probes wait as long as a file may.
GATEWAY_SETTINGS = {"SAMO_HEALTH_PROBE_TIMEOUT_S": "600"}
# BatchedInferencePipeline's default: VAD chunks of one file decoded 8 at a time.
PIPELINE_BATCH = 8
# Clips with a reference text, and the column their word error rate goes to.
WER_COLUMNS = {"jfk": "wer_jfk", "long": "wer_long", "journal": "wer_journal", "read": "wer_read"}
AUDIO_MIXES = ("mixed", "read-speech")


@dataclass(frozen=True)
class WhisperBenchOptions:
    jfk: Path = Path("tests/data/jfk.wav")
    # Long enough that the files still running when a row ends (up to 8 at c=8, the 124 s one among
    # them) do not hide much of the work: at 40 s, (b) at c=8 read 13.6 audio s/s against 24.5 at 90 s.
    duration_s: float = 90.0
    concurrency: tuple[int, ...] = (1, 8)
    output_dir: Path = Path("load_tests/results")
    fractions: tuple[float, ...] = OPEN_LOOP_FRACTIONS
    """Open-loop points for the CTranslate2 stack, as fractions of its best closed-loop file rate."""
    audio: str = "mixed"
    """`mixed`: the JFK cuts, the 72 s file and the journal recording; `read-speech`: one recording of
    real read speech (several speakers, pauses of 0.2 to 2 s, `samo.evaluation.read_speech`) that every
    client sends, and (a) with faster-whisper's VAD filter, as its users run it on long audio."""
    backends: tuple[str, ...] = ("whisper", "whisper_onnx")
    """Stack rows: the repository's CTranslate2 model, the ONNX one, or both."""
    layout: tuple[int, int] | None = None
    """Each Whisper model's Triton instances and threads per instance; None: the exporters' defaults."""
    split_s: float = 20.0
    """Seconds of py-spy sampling at the highest concurrency of the CTranslate2 stack (0: none)."""


@dataclass(frozen=True)
class Clip:
    name: str
    wav: bytes
    seconds: float
    reference: str | None


def read_speech_clips() -> list[Clip]:
    recording = read_speech_recording()
    return [Clip("read", recording.wav_bytes(), recording.duration, recording.text)]


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
        "p50_s": statistics.median(latencies) if latencies else math.nan,  # nothing finished in the row
        "p95_s": float(np.percentile(latencies, 95)) if latencies else math.nan,
        "files": len(done),
        **wers,
    }


def _word_error_rates(
    done: list[tuple[Clip, float, str]], mix: list[Clip], transcribe: Callable[[Clip], str | None]
) -> dict[str, float]:
    """Word error rate of each clip with a reference, as the timed run transcribed it, or transcribed
    once more when the run's window ended before it finished (long files at high concurrency); NaN
    (`n/a` in the table) when that transcription failed."""
    texts = {clip.name: text for clip, _, text in done}
    rates = {}
    for clip in mix:
        if not clip.reference or clip.name not in WER_COLUMNS:
            continue
        text = texts[clip.name] if clip.name in texts else transcribe(clip)
        rates[WER_COLUMNS[clip.name]] = math.nan if text is None else word_error_rate(clip.reference, text)
    return rates


def measure_faster_whisper(
    model_dir: Path, mix: list[Clip], options: WhisperBenchOptions, *, batched: bool = False
) -> tuple[dict, list[float]]:
    """(a) or, `batched`, (a'): one file at a time; the row and each file's latency (s). (a) filters
    with faster-whisper's VAD on read speech, as its users run it on long audio with pauses."""
    vad_filter = options.audio == "read-speech"
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    if batched:
        pipeline = BatchedInferencePipeline(model)

        def run(clip: Clip) -> str:
            segments, _ = pipeline.transcribe(
                io.BytesIO(clip.wav), beam_size=5, language="en", batch_size=PIPELINE_BATCH
            )
            return " ".join(s.text.strip() for s in segments)

    else:

        def run(clip: Clip) -> str:
            segments, _ = model.transcribe(
                io.BytesIO(clip.wav), beam_size=5, language="en", vad_filter=vad_filter
            )
            return " ".join(s.text.strip() for s in segments)

    done = []
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < options.duration_s or index < len(mix):
        clip = mix[index % len(mix)]
        began = time.perf_counter()
        text = run(clip)
        done.append((clip, time.perf_counter() - began, text))
        index += 1
    wall = time.perf_counter() - start
    system = BATCHED if batched else PLAIN + (", VAD filter" if vad_filter else "")
    row = _row(system, "one at a time", done, wall, _word_error_rates(done, mix, run))
    return row, [latency for _, latency, _ in done]


async def _closed_loop(
    url: str, mix: list[Clip], concurrency: int, duration_s: float, model: str
) -> tuple[list, float, int]:
    """Files finished inside the window, the window, and the requests that failed (the row shows them):
    a file still running at the end is not counted, so the tail of a long file does not stretch the
    denominator."""
    done: list[tuple[Clip, float, str]] = []
    errors: list[int] = []
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
                if response.status_code != 200:  # counted, and the row says so; the run goes on
                    logger.warning("%s answered %d for %s", url, response.status_code, clip.name)
                    errors.append(response.status_code)
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    index += 1
                    continue
                if time.perf_counter() - start <= duration_s:
                    done.append((clip, time.perf_counter() - began, response.json()["text"]))
                index += 1

    await asyncio.gather(*(worker(i * len(mix) // concurrency) for i in range(concurrency)))
    return done, duration_s, len(errors)


def _transcribe_once(url: str, clip: Clip, model: str, attempts: int = 4) -> str | None:
    """One transcription, tried up to `attempts` times: again after 429/503 (overload, a model being
    reloaded) as Retry-After says; None when it still fails (e.g. 504: the gateway's deadline for the
    file passed)."""

    def post() -> httpx.Response:
        return httpx.post(
            url, files={"file": (f"{clip.name}.wav", clip.wav)}, data={"model": model}, timeout=600
        )

    response = post()
    for _ in range(attempts - 1):
        if response.status_code not in (429, 503):
            break
        time.sleep(float(response.headers.get("retry-after", "2")))
        response = post()
    if response.status_code != 200:
        logger.warning("%s answered %d for %s: no word error rate", url, response.status_code, clip.name)
        return None
    return response.json()["text"]


# (system label, model name in the repository), measured in this order.
STACK_SYSTEMS = (
    ("(b) gateway + Triton, CTranslate2", "whisper"),
    ("(c) gateway + Triton, ONNX", "whisper_onnx"),
)


@dataclass
class StackMeasurements:
    rows: list[dict]
    triton_rows: list[dict]
    open_rows: list[dict]
    latencies_s: dict[tuple[str, int], list[float]]
    """(system, concurrency) -> each file's latency."""
    open_results: dict[float, LoadResult]
    cost_rows: list[dict] = field(default_factory=list)
    split_rows: list[dict] = field(default_factory=list)


def multipart_bodies(mix: list[Clip], model: str) -> tuple[list[bytes], str]:
    """The form `/v1/transcribe` takes, prebuilt per clip for the light generator; and its content type."""
    boundary = "samo-bench-boundary"
    bodies = []
    for clip in mix:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        bodies.append(head + clip.wav + f"\r\n--{boundary}--\r\n".encode())
    return bodies, f"multipart/form-data; boundary={boundary}"


def measure_stack(repository: Path, mix: list[Clip], options: WhisperBenchOptions) -> StackMeasurements:
    measured = StackMeasurements([], [], [], {}, {})
    with gateway_stack(repository, settings=GATEWAY_SETTINGS) as stack:
        url = f"{stack.gateway_url}/v1/transcribe"
        processes = StackProcesses(stack.gateway_pid, stack.triton_pid)
        for system, model in STACK_SYSTEMS:
            if model not in options.backends:
                continue
            asyncio.run(_closed_loop(url, mix[:2], 1, 0.1, model))  # warm-up
            windows = _windows_per_audio_minute(stack.gateway_url, url, mix, model)
            for concurrency in options.concurrency:
                with watch(stack.triton_grpc_url) as view, cpu_use(processes) as cpu:
                    done, wall, errors = asyncio.run(
                        _closed_loop(url, mix, concurrency, options.duration_s, model)
                    )
                wers = _word_error_rates(done, mix, lambda clip, m=model: _transcribe_once(url, clip, m))
                load = f"c={concurrency}"
                row = {**_row(system, load, done, wall, wers), "errors": errors}
                measured.rows.append(row)
                # `cpu_use` gives CPU per answered request: here an answered audio second.
                measured.cost_rows.append(
                    {"system": system, "load": load, **cpu.columns(row["audio_s_per_s"]), **windows}
                )
                measured.latencies_s[(system, concurrency)] = [latency for _, latency, _ in done]
                if columns := view.columns(model):
                    measured.triton_rows.append({"system": system, "load": load, **columns})
                logger.info("%s c=%d: %.1f audio s/s", model, concurrency, measured.rows[-1]["audio_s_per_s"])
        for system, model in STACK_SYSTEMS:
            if options.split_s > 0 and model in options.backends:
                measured.split_rows += _stage_split(
                    stack, url, mix, system, repository / model, options, measured.cost_rows
                )
        system, model = STACK_SYSTEMS[0]
        saturation = max(
            (row["files"] / options.duration_s for row in measured.rows if row["system"] == system),
            default=0.0,
        )
        bodies, content_type = multipart_bodies(mix, model)
        if not saturation and model in options.backends:
            logger.warning("%s finished no file in a row: no open-loop rows (make rows longer)", system)
        for fraction in options.fractions if saturation and model in options.backends else ():
            rate = fraction * saturation
            with watch(stack.triton_grpc_url) as view:
                result = run_open_loop_sync(
                    url,
                    bodies,
                    rate_per_s=rate,
                    duration_s=options.duration_s,
                    warmup_s=0.0,
                    drain_s=options.duration_s / 2,  # long files due near the end still finish
                    content_type=content_type,
                )
            load = f"open {fraction:.0%} ({rate:.2f} files/s)"
            measured.open_results[fraction] = result
            measured.open_rows.append(
                {
                    "system": system,
                    "load": load,
                    "files_per_s": result.throughput,
                    "p50_s": result.p50_ms / 1000,
                    "p90_s": result.p90_ms / 1000,
                    "p99_s": result.p99_ms / 1000,
                    "errors": result.errors,
                    "unfinished": result.unfinished,
                }
            )
            if columns := view.columns(model):
                measured.triton_rows.append({"system": system, "load": load, **columns})
    return measured


def _windows_per_audio_minute(gateway_url: str, url: str, mix: list[Clip], model: str) -> dict[str, float]:
    """Windows and repairs the gateway sends per audio minute, counted over one transcription of each
    file alone (a closed-loop row ends with files half done)."""
    before = window_counts(gateway_url)
    for clip in mix:
        _transcribe_once(url, clip, model)
    sent = window_counts(gateway_url) - before
    minutes = sum(clip.seconds for clip in mix) / 60
    return {
        "windows_per_audio_min": sent["window"] / minutes,
        "repairs_per_audio_min": sent["repair"] / minutes,
    }


def _stage_split(
    stack: RunningStack,
    url: str,
    mix: list[Clip],
    system: str,
    model_dir: Path,
    options: WhisperBenchOptions,
    costs: list[dict],
) -> list[dict]:
    """py-spy's split of the gateway and the stubs at the highest concurrency, in CPU ms per audio second
    where the row at that concurrency measured the part's CPU."""
    top = max(options.concurrency)
    split = sampled_split(
        stack.gateway_pid,
        stack.triton_pid,
        options.split_s,
        lambda seconds: asyncio.run(_closed_loop(url, mix, top, seconds, model_dir.name)),
        model_dir,
    )
    cost = next((c for c in costs if c["system"] == system and c["load"] == f"c={top}"), {})
    rows = split_rows("gateway", split["gateway"], cost.get("cpu_ms_gateway"))
    rows += split_rows("stubs", split["stubs"], cost.get("cpu_ms_stubs"))
    return [{"system": system, **row} for row in rows]


def write_plots(
    rows: list[dict],
    measured: StackMeasurements,
    baselines: dict[str, list[float]],
    folder: Path,
    prefix: str = "whisper",
) -> list[Path]:
    from load_tests.plots import plot_latency_distribution, plot_throughput_vs_concurrency

    counts = sorted({c for _, c in measured.latencies_s})
    points = [
        {"system": row["system"], "concurrency": int(row["load"][2:]), "throughput": row["audio_s_per_s"]}
        for row in rows
        if row["load"].startswith("c=")
    ]
    points += [
        {"system": row["system"], "concurrency": c, "throughput": row["audio_s_per_s"]}
        for row in rows
        if row["load"] == "one at a time"
        for c in counts
    ]
    paths = [
        plot_throughput_vs_concurrency(
            points,
            folder / f"{prefix}-throughput.png",
            y_label="audio seconds per second",
            title="Whisper: throughput against concurrency (closed loop)",
        )
    ]
    top = max(counts)
    latencies = {f"{system}, one at a time": values for system, values in baselines.items()}
    latencies.update({f"{s}, c={c}": v for (s, c), v in measured.latencies_s.items() if c == top})
    paths.append(
        plot_latency_distribution(
            latencies,
            folder / f"{prefix}-latency.png",
            unit="s",
            title=f"Whisper: latency per file (c={top})",
        )
    )
    if measured.open_results:
        paths.append(
            plot_latency_distribution(
                {
                    f"{fraction:.0%} of saturation": [ms / 1000 for ms in result.latencies_ms]
                    for fraction, result in measured.open_results.items()
                },
                folder / f"{prefix}-latency-open.png",
                unit="s",
                title="Whisper (CTranslate2 stack): latency from due time (open loop)",
            )
        )
    return paths


def run_whisper_benchmark(options: WhisperBenchOptions) -> str:
    from exporters.whisper.ct2_convert import convert_ct2_whisper
    from exporters.whisper.ct2_export import WhisperCt2ExportOptions, embedded_model_dir, export_whisper_ct2
    from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx

    if options.audio not in AUDIO_MIXES:
        raise ValueError(f"audio: one of {', '.join(AUDIO_MIXES)}, not {options.audio!r}")
    mix = read_speech_clips() if options.audio == "read-speech" else clips(options.jfk)
    plain, plain_latencies = measure_faster_whisper(embedded_model_dir(), mix, options)
    batched, batched_latencies = measure_faster_whisper(embedded_model_dir(), mix, options, batched=True)
    rows = [plain, batched]
    with tempfile.TemporaryDirectory(prefix="samo-bench-whisper-") as workdir:
        repository = Path(workdir) / "repository"
        instances, threads = options.layout or (None, None)
        export_whisper_ct2(
            WhisperCt2ExportOptions(repository=repository, instances=instances, intra_threads=threads)
        )
        if "whisper_onnx" in options.backends:
            hf_dir = Path(workdir) / "tiny-en-hf"
            convert_ct2_whisper(embedded_model_dir(), hf_dir)
            export_whisper_onnx(
                WhisperOnnxExportOptions(
                    model=hf_dir, repository=repository, instances=instances, intra_threads=threads
                )
            )
        measured = measure_stack(repository, mix, options)
    rows += measured.rows
    summary = [
        f"- {row['system']} {row['load']}: {row['audio_s_per_s'] / plain['audio_s_per_s']:.2f}x (a), "
        f"{row['audio_s_per_s'] / batched['audio_s_per_s']:.2f}x (a')"
        for row in rows[1:]
        if "audio_s_per_s" in row
    ]
    if options.audio == "read-speech":
        summary += read_speech_target_lines(rows, plain, batched, max(options.concurrency))
    else:
        summary += target_lines(rows, plain, batched, max(options.concurrency))
    options.output_dir.mkdir(parents=True, exist_ok=True)
    slug = "whisper" if options.audio == "mixed" else f"whisper-{options.audio}"
    plots = write_plots(
        rows,
        measured,
        {PLAIN: plain_latencies, BATCHED: batched_latencies},
        options.output_dir / "plots",
        prefix=slug,
    )
    wer_columns = tuple(WER_COLUMNS[clip.name] for clip in mix if clip.name in WER_COLUMNS)
    header = (
        f"# Whisper benchmark ({options.audio})\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.machine()}; Whisper tiny.en, beam 5, English (CTranslate2 int8, ONNX float32); {len(mix)} files "
        f"({', '.join(f'{c.seconds:.1f}' for c in mix)} s) cycled for {options.duration_s:.0f} s per row; "
        f"(a') with batch_size {PIPELINE_BATCH}.\n\n"
    )
    report = (
        header
        + format_table(rows, COLUMNS + wer_columns)
        + "\n"
        + "\n".join(summary)
        + "\n\n## Where the stack's CPU goes\n\nCores busy, CPU ms per audio second of each part (gateway, "
        "tritonserver, its Python stubs, the load generator), and the windows and repairs the gateway sends "
        "per audio minute (one transcription of each file alone).\n\n"
        + format_table(measured.cost_rows, COST_COLUMNS)
        + (
            f"\n## Stages at c={max(options.concurrency)} (py-spy, {options.split_s:.0f} s per stack)\n\n"
            "Share of each part's samples by stage: the gateway's threads on a core; the stubs' Python "
            "thread inside `execute`, busy or waiting on CTranslate2's or ONNX Runtime's threads. CPU ms "
            "per audio second is that share of the part's CPU in the row above.\n\n"
            + format_table(measured.split_rows, SPLIT_COLUMNS)
            if measured.split_rows
            else ""
        )
        + "\n## Open loop (CTranslate2 stack)\n\nPoisson arrivals of the same files at fractions of the "
        "stack's best closed-loop file rate; latency from each file's due time.\n\n"
        + format_table(measured.open_rows, OPEN_COLUMNS)
        + "\n## Triton's view of each stack row\n\nPer request (one Whisper window): queue and compute time "
        "(ms); per execution: mean batch (windows) and compute time.\n\n"
        + format_table(measured.triton_rows, TRITON_COLUMNS)
        + "\n"
        + markdown_images(plots, options.output_dir)
    )
    path = options.output_dir / f"{slug}.md"
    path.write_text(keep_section(path.read_text() if path.exists() else "", report))
    return report


def target_lines(rows: list[dict], plain: dict, batched: dict, top: int) -> list[str]:
    """Issue 13, section 7: the CTranslate2 stack at the highest concurrency against both baselines,
    with word error rates no worse than the batched pipeline's."""
    stack = next((r for r in rows if r["system"] == STACK_SYSTEMS[0][0] and r["load"] == f"c={top}"), None)
    if stack is None:
        return []
    vs_batched = stack["audio_s_per_s"] / batched["audio_s_per_s"]
    vs_plain = stack["audio_s_per_s"] / plain["audio_s_per_s"]
    worse = [
        column
        for column in WER_COLUMNS.values()
        if column in stack
        and column in batched
        and not stack[column] <= batched[column] + 1e-9  # NaN: unknown, not met
    ]
    return [
        f"- target: (b) at c={top} >= 1.0x (a'): {vs_batched:.2f}x, {'met' if vs_batched >= 1 else 'missed'}; "
        f">= 2x (a): {vs_plain:.2f}x, {'met' if vs_plain >= 2 else 'missed'}; word error rate no worse than "
        f"(a'): {'met' if not worse else 'missed on ' + ', '.join(worse)}"
    ]


def read_speech_target_lines(rows: list[dict], plain: dict, batched: dict, top: int) -> list[str]:
    """Issue 21 on real speech: the CTranslate2 stack at the highest concurrency at least 1.0x (a'), at
    c=1 at least 1.0x (a) with its VAD filter, with a word error rate at most (a)'s + 0.02."""
    lines = []
    for load, baseline, name in ((f"c={top}", batched, "(a')"), ("c=1", plain, "(a)")):
        stack = next((r for r in rows if r["system"] == STACK_SYSTEMS[0][0] and r["load"] == load), None)
        if stack is None:
            continue
        ratio = stack["audio_s_per_s"] / baseline["audio_s_per_s"]
        wer, limit = stack.get("wer_read", math.nan), plain.get("wer_read", math.nan) + 0.02
        lines.append(
            f"- target: (b) at {load} >= 1.0x {name}: {ratio:.2f}x, {'met' if ratio >= 1 else 'missed'}; "
            f"word error rate {wer:.3f} <= (a)'s + 0.02 = {limit:.3f}: {'met' if wer <= limit else 'missed'}"
        )
    return lines
