"""`samo bench live`: N live sessions at once, each streaming a different journal recording at real-time
pace in short chunks, against gateway + Triton (Whisper tiny.en, CTranslate2).

Sessions arrive open loop (start times drawn at random over `arrival_s`), each a different recording
(espeak-ng journal speech with pauses), sent as 24 kHz PCM in `chunk_s` chunks at the wall clock's pace.
Per N: time from the start of speech to a turn's first confirmed text, and from the end of speech (the
last speech frame, before the VAD's silence) to the turn's `completed`, p50/p95/p99 over every turn;
the final word error rate of the sessions against the file route on the same recordings, and which
decodes made its errors (`load_tests/live_wer.py`: words partials confirmed, words finals added); Triton's view
(mean batch, queue and compute per window); CPU by process. The verdict: the largest N whose p95
end-of-speech-to-`completed` stays under 1 s. Then the peers, where their environments are installed:
WhisperLive (`load_tests/whisperlive_peer.py`) and WhisperLiveKit (`load_tests/whisperlivekit_peer.py`).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import statistics
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from load_tests.cpu_use import CPU_COLUMNS, StackProcesses, cpu_use
from load_tests.live_client import LiveRun, realtime_url, stream_speech
from load_tests.live_wer import attributed_errors
from load_tests.loadgen import format_table
from load_tests.processes import gateway_stack
from load_tests.triton_view import watch
from load_tests.whisperlive_peer import (
    WHISPERLIVE_VENV,
    PeerPace,
    PeerRun,
    stream_to_whisperlive,
    whisperlive_server,
)
from load_tests.whisperlivekit_peer import (
    WHISPERLIVEKIT_VENV,
    LiveKitRun,
    installed_version,
    stream_to_whisperlivekit,
    whisperlivekit_server,
)
from samo.evaluation.journal_speech import JournalRecording, journal_recording, wav_bytes
from samo.evaluation.wer import word_error_rate

logger = logging.getLogger(__name__)

PREFIX_S = 0.3  # OpenAI's default prefix padding, before the first speech frame
SILENCE_S = 0.5  # silence_duration_ms the sessions ask for
COLUMNS = (
    "sessions",
    "turns",
    "first_text_p50_s",
    "first_text_p95_s",
    "final_p50_s",
    "final_p95_s",
    "final_p99_s",
    "wer_live",
    "wer_file",
    "early_words",
    "wer_early",
    "wer_final_part",
    "triton_batch",
    "triton_queue_ms",
    "triton_compute_ms",
    *CPU_COLUMNS,
)
LIMIT_S = 1.0
PEER_COLUMNS = (
    "system",
    "sessions",
    "segments",
    "never_completed",
    "final_p50_s",
    "final_p95_s",
    "final_p99_s",
    "wer_live",
    "wer_file",
)


@dataclass(frozen=True)
class LiveBenchOptions:
    sessions: tuple[int, ...] = (1, 2, 4)
    seconds: float = 45.0
    """Audio per session."""
    chunk_s: float = 0.04
    arrival_s: float = 5.0
    output_dir: Path = Path("load_tests/results")
    whisperlive_venv: Path | None = WHISPERLIVE_VENV
    """WhisperLive's environment (`make peers-live-env`) for its peer rows; None or missing: no peer rows."""
    whisperlivekit_venv: Path | None = WHISPERLIVEKIT_VENV
    """WhisperLiveKit's environment (`make peers-livekit-env`) for its rows; None or missing: no rows."""


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latencies(run: LiveRun) -> tuple[list[float], list[float]]:
    """(speech start to first delta, end of speech to completed) per turn, seconds; audio position p was
    sent at `speech_sent_at + p` (real-time pace)."""
    first, final = [], []
    for item in run.items():
        if item.start_ms is None or item.end_ms is None or item.completed_at is None:
            continue
        if item.first_delta_at is not None:
            first.append(item.first_delta_at - (run.speech_sent_at + item.start_ms / 1000 + PREFIX_S))
        final.append(item.completed_at - (run.speech_sent_at + item.end_ms / 1000 - SILENCE_S))
    return first, final


async def _sessions(url: str, recordings: list[JournalRecording], options: LiveBenchOptions) -> list[LiveRun]:
    rng = random.Random(len(recordings))
    starts = sorted(rng.uniform(0, options.arrival_s) for _ in recordings)

    async def one(recording: JournalRecording, delay: float) -> LiveRun:
        await asyncio.sleep(delay)
        return await stream_speech(url, recording.samples, chunk_s=options.chunk_s, speed=1.0, timeout_s=600)

    return await asyncio.gather(*(one(r, d) for r, d in zip(recordings, starts, strict=True)))


def measure(
    stack_url: str, triton_grpc: str, processes: StackProcesses, options: LiveBenchOptions
) -> tuple[list[dict], list[JournalRecording], list[str]]:
    """The stack's rows, and the recordings and their file-route texts (for the peer's rows)."""
    recordings = [
        journal_recording(options.seconds, seed=10 + i, long_sentences=0)
        for i in range(max(options.sessions))
    ]
    with httpx.Client(base_url=stack_url, timeout=600) as http:
        files = [
            http.post("/v1/transcribe", files={"file": ("r.wav", wav_bytes(r.samples))}).json()["text"]
            for r in recordings
        ]
    url = realtime_url(stack_url)
    asyncio.run(stream_speech(url, recordings[0].samples[: 5 * 16000], speed=0))  # warm-up
    rows = []
    for count in options.sessions:
        with watch(triton_grpc) as triton, cpu_use(processes) as cpu:
            runs = asyncio.run(_sessions(url, recordings[:count], options))
        first = [v for run in runs for v in latencies(run)[0]]
        final = [v for run in runs for v in latencies(run)[1]]
        reference = " ".join(r.text for r in recordings[:count])
        turns = len(final)
        row: dict[str, object] = {
            "sessions": count,
            "turns": turns,
            "first_text_p50_s": percentile(first, 50),
            "first_text_p95_s": percentile(first, 95),
            **finalize_and_wer(final, reference, [run.transcript for run in runs], files[:count]),
            **attributed_errors(reference, runs).columns(),
            **triton.columns("whisper"),
            **cpu.columns(turns / cpu.wall_s if cpu.wall_s else 0.0),
        }
        rows.append(row)
        logger.info("live sessions=%d: %s", count, row)
    return rows, recordings, files


def finalize_and_wer(
    final: list[float], reference: str, live: list[str], files: list[str]
) -> dict[str, object]:
    """The columns the stack's rows and the peer's share: end of speech to `completed` (p50/p95/p99) and
    the word error rate of the live transcripts and of the file route on the same recordings."""
    return {
        "final_p50_s": percentile(final, 50),
        "final_p95_s": percentile(final, 95),
        "final_p99_s": percentile(final, 99),
        "wer_live": word_error_rate(reference, " ".join(live)),
        "wer_file": word_error_rate(reference, " ".join(files)),
    }


def measure_whisperlive(
    model_dir: Path, recordings: list[JournalRecording], files: list[str], options: LiveBenchOptions
) -> list[dict]:
    """WhisperLive on the same model folder, the same recordings at the same pace and arrivals: per N,
    from the end of each completed segment's audio to its `completed`, and the final word error rate."""
    assert options.whisperlive_venv is not None
    rows = []
    pace = PeerPace(chunk_s=options.chunk_s)
    for count in options.sessions:
        with whisperlive_server(model_dir, max_clients=count, venv=options.whisperlive_venv) as url:
            rng = random.Random(count)
            starts = sorted(rng.uniform(0, options.arrival_s) for _ in range(count))

            runs = asyncio.run(_peer_sessions(url, model_dir, recordings[:count], starts, pace))
        final = [v for run in runs for v in run.finalize_latencies()]
        reference = " ".join(r.text for r in recordings[:count])
        row: dict[str, object] = {
            "system": "WhisperLive 0.10.0",
            "sessions": count,
            "segments": len(final),
            "never_completed": sum(run.never_completed for run in runs),
            **finalize_and_wer(final, reference, [run.transcript for run in runs], files[:count]),
        }
        rows.append(row)
        logger.info("WhisperLive sessions=%d: %s", count, row)
    return rows


async def _peer_sessions(
    url: str, model_dir: Path, recordings: list[JournalRecording], starts: list[float], pace: PeerPace
) -> list[PeerRun]:
    async def one(recording: JournalRecording, delay: float) -> PeerRun:
        await asyncio.sleep(delay)
        return await stream_to_whisperlive(url, recording.samples, str(model_dir), pace)

    return await asyncio.gather(*(one(r, d) for r, d in zip(recordings, starts, strict=True)))


def measure_whisperlivekit(
    model_dir: Path, recordings: list[JournalRecording], files: list[str], options: LiveBenchOptions
) -> list[dict]:
    """WhisperLiveKit on the same model folder, the same recordings at the same pace and arrivals as
    WhisperLive's rows: per N, from the end of each commit's last word in the audio to the message that
    commits it, and the final word error rate. One server for every N (it has no client limit to set),
    warmed up by one session on the first 5 s of speech, as the stack is."""
    assert options.whisperlivekit_venv is not None
    system = f"WhisperLiveKit {installed_version(options.whisperlivekit_venv)}"
    rows = []
    pace = PeerPace(chunk_s=options.chunk_s)
    with whisperlivekit_server(model_dir, venv=options.whisperlivekit_venv) as url:
        asyncio.run(stream_to_whisperlivekit(url, recordings[0].samples[: 5 * 16000], pace))
        for count in options.sessions:
            rng = random.Random(count)
            starts = sorted(rng.uniform(0, options.arrival_s) for _ in range(count))
            runs = asyncio.run(_livekit_sessions(url, recordings[:count], starts, pace))
            final = [v for run in runs for v in run.finalize_latencies()]
            reference = " ".join(r.text for r in recordings[:count])
            row: dict[str, object] = {
                "system": system,
                "sessions": count,
                "segments": len(final),
                "never_completed": sum(run.never_completed for run in runs),
                **finalize_and_wer(final, reference, [run.transcript for run in runs], files[:count]),
            }
            unfinished = sum(not run.stopped for run in runs)
            if unfinished:
                logger.warning("WhisperLiveKit sessions=%d: %d never said ready_to_stop", count, unfinished)
            rows.append(row)
            logger.info("WhisperLiveKit sessions=%d: %s", count, row)
    return rows


async def _livekit_sessions(
    url: str, recordings: list[JournalRecording], starts: list[float], pace: PeerPace
) -> list[LiveKitRun]:
    async def one(recording: JournalRecording, delay: float) -> LiveKitRun:
        await asyncio.sleep(delay)
        return await stream_to_whisperlivekit(url, recording.samples, pace)

    return await asyncio.gather(*(one(r, d) for r, d in zip(recordings, starts, strict=True)))


def _installed(venv: Path | None) -> bool:
    return venv is not None and (venv / "bin" / "python").exists()


def _peer_verdict(name: str, rows: list[dict]) -> str:
    largest = _largest_within(rows)
    return f" {name}: " + (
        f"largest N under {LIMIT_S:.0f} s: {largest}." if largest else f"no N under {LIMIT_S:.0f} s."
    )


def _largest_within(rows: list[dict]) -> int | None:
    within = [int(str(row["sessions"])) for row in rows if float(str(row["final_p95_s"])) < LIMIT_S]
    return max(within) if within else None


def run_live_benchmark(options: LiveBenchOptions) -> str:
    from exporters.whisper.ct2_export import WhisperCt2ExportOptions, embedded_model_dir, export_whisper_ct2

    with tempfile.TemporaryDirectory(prefix="samo-bench-live-") as workdir:
        repository = Path(workdir) / "repository"
        export_whisper_ct2(WhisperCt2ExportOptions(repository=repository))
        settings = {"SAMO_HEALTH_PROBE_TIMEOUT_S": "600", "SAMO_WORKERS": "1"}
        with gateway_stack(repository, settings=settings) as stack:
            processes = StackProcesses(stack.gateway_pid, stack.triton_pid)
            rows, recordings, files = measure(stack.gateway_url, stack.triton_grpc_url, processes, options)
        whisperlive_rows: list[dict] = []
        if _installed(options.whisperlive_venv):
            whisperlive_rows = measure_whisperlive(embedded_model_dir(), recordings, files, options)
        livekit_rows: list[dict] = []
        if _installed(options.whisperlivekit_venv):
            livekit_rows = measure_whisperlivekit(embedded_model_dir(), recordings, files, options)
    largest = _largest_within(rows)
    verdict = (
        f"Largest N with p95 end of speech to `completed` under {LIMIT_S:.0f} s: {largest}."
        if largest
        else f"No N kept p95 end of speech to `completed` under {LIMIT_S:.0f} s."
    )
    if whisperlive_rows or livekit_rows:
        verdict += " Peers on the same model folder, recordings and pace, after the stack in the same run."
    if whisperlive_rows:
        verdict += _peer_verdict("WhisperLive (end of a segment to `completed`)", whisperlive_rows)
    else:
        verdict += (
            " No WhisperLive rows: `--no-peers`, or its environment is missing (`make peers-live-env`)."
        )
    if livekit_rows:
        verdict += _peer_verdict("WhisperLiveKit (end of a commit's last word to its message)", livekit_rows)
    else:
        verdict += (
            " No WhisperLiveKit rows: `--no-peers`, or its environment is missing (`make peers-livekit-env`)."
        )
    if whisperlive_rows or livekit_rows:
        verdict += "\n\n" + format_table(whisperlive_rows + livekit_rows, PEER_COLUMNS)
    report = (
        f"# Live transcription benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.machine()}; Whisper tiny.en (CTranslate2 int8); {options.seconds:.0f} s of journal speech "
        f"per session at real-time pace in {options.chunk_s * 1000:.0f} ms chunks, sessions arriving over "
        f"{options.arrival_s:.0f} s; `server_vad` with {SILENCE_S * 1000:.0f} ms of silence. Latencies in "
        "seconds: first text from the first speech frame; final from the last speech frame (the VAD's "
        "silence included).\n\n" + format_table(rows, COLUMNS) + f"\n{verdict}\n"
    )
    options.output_dir.mkdir(parents=True, exist_ok=True)
    (options.output_dir / "live.md").write_text(report)
    return report
