"""`samo bench ...` and `samo eval ...`: benchmarks and quality evaluations that print tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import typer

from samo_cli.common import setup_logging

bench_app = typer.Typer(no_args_is_help=True, help="Side-by-side benchmarks that print tables.")
eval_app = typer.Typer(no_args_is_help=True, help="Quality evaluations on real data.")


def _counts(values: str) -> tuple[int, ...]:
    return tuple(int(v) for v in values.split(","))


def _fractions(values: str) -> tuple[float, ...]:
    """Open-loop points as fractions of saturation; an empty string skips the open loop."""
    fractions = tuple(float(v) for v in values.split(",") if v.strip())
    if any(not 0 < f <= 1.5 for f in fractions):
        raise typer.BadParameter(f"fractions of saturation must lie in (0, 1.5], got {values!r}")
    return fractions


def _layout(value: str) -> tuple[int, int]:
    try:
        instances, threads = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"layout: INSTANCESxTHREADS, e.g. 2x1, not {value!r}") from None
    if instances < 1 or threads < 1:
        raise typer.BadParameter("layout: at least one instance and one thread")
    return instances, threads


OPEN_LOOP_HELP = (
    "Comma-separated open-loop rates as fractions of each system's closed-loop saturation ('' skips)."
)


@bench_app.command("emotion")
def bench_emotion_command(
    duration: Annotated[float, typer.Option(help="Seconds per measurement.")] = 8.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32",
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated: bert-base, minilm-zero-shot; also minilm-classifier (MiniLM-L6's size), "
            "near-free."
        ),
    ] = "bert-base,minilm-zero-shot",
    output: Annotated[Path, typer.Option(help="Folder for the result tables.")] = Path("load_tests/results"),
    quantize: Annotated[
        Literal["none", "int8"], typer.Option(help="Export the served graphs with none | int8.")
    ] = "none",
    open_loop: Annotated[str, typer.Option(help=OPEN_LOOP_HELP)] = "0.25,0.5,0.7,0.9",
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up before each measurement.")] = 2.0,
    untuned: Annotated[bool, typer.Option(help="Also measure the naive service untuned (a0).")] = True,
    peers: Annotated[
        bool,
        typer.Option(
            help="Also measure Infinity and LitServe on each model's sequence-classification checkpoint "
            "(fp32 runs; `make peers-env` installs Infinity)."
        ),
    ] = True,
    only_peers: Annotated[
        bool, typer.Option(help="Only the peer rows, written to emotion-peers.md.")
    ] = False,
) -> None:
    """Naive FastAPI + PyTorch (untuned and tuned) vs in-process ONNX Runtime (the compute limit) vs
    gateway + Triton: closed loop, then open loop at fractions of saturation; tables, Triton's view, plots.
    Then Infinity and LitServe on the same checkpoint (wrk at c=32 and c=256), scores checked against the
    stack's."""
    setup_logging()
    from load_tests.bench_emotion import BenchOptions, run_benchmark
    from load_tests.peers import PeerOptions

    options = BenchOptions(
        duration_s=duration,
        concurrency=_counts(concurrency),
        models=tuple(m.strip() for m in models.split(",")),
        output_dir=output,
        quantize=quantize,
        fractions=_fractions(open_loop),
        warmup_s=warmup,
        untuned_naive=untuned,
        peers=peers or only_peers,
        only_peers=only_peers,
        peer_options=PeerOptions(duration_s=duration, warmup_s=warmup),
    )
    typer.echo(run_benchmark(options))


@bench_app.command("batch")
def bench_batch_command(
    repository: Annotated[
        Path,
        typer.Option(help="A model repository with the default emotion and Whisper models (`samo export`)."),
    ] = Path("model_repository"),
    texts: Annotated[int, typer.Option(min=1, help="Lines of the journal-text batch.")] = 10_000,
    voice_notes: Annotated[
        int, typer.Option(min=0, help="Lines of the voice-note batch (0: texts only).")
    ] = 200,
    duration: Annotated[
        float, typer.Option(help="Seconds of each synchronous closed loop and interactive window.")
    ] = 20.0,
    fraction: Annotated[float, typer.Option(help="Interactive rate, as a fraction of the text rate.")] = 0.5,
) -> None:
    """The issue's batch benchmark: a text batch and a voice-note batch run to their end, lines/s and
    audio s/s against the same work sent synchronously at the sustainable rate, and interactive p99
    without and with the batches running."""
    setup_logging()
    from load_tests.bench_batch import BatchBenchOptions, run_batch_bench

    options = BatchBenchOptions(
        repository, texts=texts, voice_notes=voice_notes, duration_s=duration, fraction=fraction
    )
    typer.echo(run_batch_bench(options))


@bench_app.command("batch-interference")
def bench_batch_interference_command(
    repository: Annotated[
        Path, typer.Option(help="A model repository with the default emotion model (`samo export emotion`).")
    ] = Path("model_repository"),
    duration: Annotated[float, typer.Option(help="Seconds per open-loop window.")] = 20.0,
    fraction: Annotated[float, typer.Option(help="Interactive rate, as a fraction of saturation.")] = 0.5,
    lines: Annotated[int, typer.Option(help="Lines of the batch that runs beside them.")] = 20_000,
    runner_process: Annotated[
        bool,
        typer.Option(
            "--runner-process/--in-gateway",
            help="Batch lines in the niced child process (SAMO_BATCH_RUNNER_PROCESS, the default) or in "
            "the gateway process.",
        ),
    ] = True,
) -> None:
    """Interactive p99 at a fraction of the sustainable rate, without and with a large batch running
    (issue 24's 1.2x target), and how fast the batch went meanwhile."""
    setup_logging()
    from load_tests.bench_batch import BatchBenchOptions, run_interference

    options = BatchBenchOptions(
        repository, duration_s=duration, fraction=fraction, texts=lines, runner_process=runner_process
    )
    typer.echo(run_interference(options))


@bench_app.command("whisper")
def bench_whisper_command(
    duration: Annotated[float, typer.Option(help="Seconds per row.")] = 90.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts for the stack.")] = "1,8",
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
    open_loop: Annotated[str, typer.Option(help=OPEN_LOOP_HELP)] = "0.25,0.5,0.7,0.9",
    audio: Annotated[
        str,
        typer.Option(
            help="`mixed` (JFK cuts, a 72 s file, a 2-minute journal recording) or `read-speech` (one "
            "68 s recording of real read speech, several speakers, with pauses)."
        ),
    ] = "mixed",
    backends: Annotated[
        str, typer.Option(help="Comma-separated stack models: `whisper` (CTranslate2), `whisper_onnx`.")
    ] = "whisper,whisper_onnx",
    split: Annotated[
        float, typer.Option(help="Seconds of py-spy stage sampling at the highest concurrency (0: none).")
    ] = 20.0,
    layout: Annotated[
        str,
        typer.Option(
            help="Each Whisper model's Triton instances x threads per instance, e.g. 1x2 (default: the "
            "exporters')."
        ),
    ] = "",
) -> None:
    """faster-whisper in-process (plain, and its BatchedInferencePipeline), one file at a time, vs gateway +
    Triton (CTranslate2, ONNX): closed loop with word error rates, where the CPU goes, open loop, Triton's
    view, plots."""
    setup_logging()
    from load_tests.bench_whisper import WhisperBenchOptions, run_whisper_benchmark

    options = WhisperBenchOptions(
        duration_s=duration,
        concurrency=_counts(concurrency),
        output_dir=output,
        fractions=_fractions(open_loop),
        audio=audio,
        backends=tuple(name.strip() for name in backends.split(",") if name.strip()),
        split_s=split,
        layout=_layout(layout) if layout else None,
    )
    typer.echo(run_whisper_benchmark(options))


@bench_app.command("live")
def bench_live_command(
    sessions: Annotated[
        str, typer.Option(help="Comma-separated counts of concurrent live sessions.")
    ] = "1,2,4",
    seconds: Annotated[float, typer.Option(help="Seconds of speech per session.")] = 45.0,
    chunk_ms: Annotated[float, typer.Option(help="Audio per append event, milliseconds (20 to 100).")] = 40.0,
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
    peers: Annotated[
        bool,
        typer.Option(
            help="WhisperLive's and WhisperLiveKit's rows after the stack's, where `make peers-live-env` and "
            "`make peers-livekit-env` installed them."
        ),
    ] = True,
) -> None:
    """Live transcription (WS /v1/realtime): N sessions at real-time pace; first-text and finalize
    latency percentiles, word error rate against the file route, Triton's batches, CPU by process."""
    setup_logging()
    from load_tests.bench_live import LiveBenchOptions, run_live_benchmark

    options = LiveBenchOptions(
        sessions=_counts(sessions), seconds=seconds, chunk_s=chunk_ms / 1000, output_dir=output
    )
    if not peers:
        options = dataclasses.replace(options, whisperlive_venv=None, whisperlivekit_venv=None)
    typer.echo(run_live_benchmark(options))


@bench_app.command("summarizer")
def bench_summarizer_command(
    requests: Annotated[int, typer.Option(help="Requests measured per row, at least.")] = 6,
    rounds: Annotated[int, typer.Option(help="Requests per client per row (c clients: c x rounds).")] = 2,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8",
    beams: Annotated[str, typer.Option(help="Comma-separated beam widths (1: greedy).")] = "1,4",
    output: Annotated[Path, typer.Option(help="Markdown file for the result table.")] = Path(
        "load_tests/results/summarizer.md"
    ),
) -> None:
    """t5-small-sized random model, 400-token inputs, 64 new tokens: PyTorch generate vs optimum's
    ONNX Runtime model vs gateway + Triton (SAMO's engine), one table."""
    setup_logging()
    from load_tests.bench_summarizer import SummarizerBenchOptions, run_summarizer_benchmark

    options = SummarizerBenchOptions(
        min_requests=requests,
        rounds=rounds,
        concurrency=_counts(concurrency),
        beams=_counts(beams),
        output=output,
    )
    typer.echo(run_summarizer_benchmark(options))


def _preferred(values: str) -> tuple[tuple[int, ...], ...]:
    """`none;16,32;8,16,32` -> ((), (16, 32), (8, 16, 32))."""
    return tuple(() if v.strip() in ("", "none") else _counts(v) for v in values.split(";"))


def _instances(values: str) -> tuple[tuple[int, int], ...]:
    """`1x2,2x1` -> ((1, 2), (2, 1)): instances x intra-op threads each."""
    pairs = []
    for value in values.split(","):
        count, _, threads = value.partition("x")
        pairs.append((int(count), int(threads or 2)))
    return tuple(pairs)


@bench_app.command("sweep")
def bench_sweep_command(
    models: Annotated[str, typer.Option(help="Comma-separated: emotion, embedder.")] = "emotion,embedder",
    queue_delays: Annotated[
        str, typer.Option(help="Comma-separated max_queue_delay_microseconds values.")
    ] = "0,100,500,1000,2000,5000",
    preferred: Annotated[
        str, typer.Option(help="Semicolon-separated preferred batch size lists; `none` for none.")
    ] = "none;16,32;8,16,32;32",
    instances: Annotated[
        str, typer.Option(help="Comma-separated instances x intra-op threads, e.g. 1x2,2x1,2x2.")
    ] = "1x2,2x1,2x2",
    coalesce_in_flight: Annotated[
        str,
        typer.Option(
            help="Comma-separated gateway `coalesce_in_flight` values: Triton calls open per encoder "
            "before concurrent requests join one call (0: off)."
        ),
    ] = "0,1,2,4,8",
    cache: Annotated[bool, typer.Option(help="Also measure Triton's response cache.")] = True,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32",
    duration: Annotated[float, typer.Option(help="Seconds per measurement.")] = 8.0,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up before each measurement.")] = 2.0,
    quantize: Annotated[
        Literal["none", "int8"], typer.Option(help="The emotion model's graph: none | int8.")
    ] = "none",
    output: Annotated[Path, typer.Option(help="Folder for sweep.md and its plots.")] = Path(
        "load_tests/results"
    ),
) -> None:
    """Dynamic batching (queue delay, preferred sizes), instances, the gateway's coalescing and the
    response cache for the emotion model and the sentence embedder, one setting at a time; the table
    names the best."""
    setup_logging()
    from load_tests.sweep import SweepOptions, run_sweep

    options = SweepOptions(
        models=tuple(m.strip() for m in models.split(",")),
        queue_delays_us=_counts(queue_delays),
        preferred=_preferred(preferred),
        instances=_instances(instances),
        coalesce_in_flight=_counts(coalesce_in_flight),
        cache=cache,
        concurrency=_counts(concurrency),
        duration_s=duration,
        warmup_s=warmup,
        quantize=quantize,
        output_dir=output,
    )
    typer.echo(run_sweep(options))


def _settings(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name.startswith("SAMO_"):
            raise typer.BadParameter(f"expected SAMO_NAME=value, got {value!r}")
        pairs.append((name, setting))
    return tuple(pairs)


@bench_app.command("overhead")
def bench_overhead_command(
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32,256",
    duration: Annotated[float, typer.Option(help="Seconds per row.")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up before each row.")] = 2.0,
    grpc_clients: Annotated[int, typer.Option(help="Client processes for the gRPC rows.")] = 2,
    open_loop: Annotated[
        float, typer.Option(help="Open-loop rate as a fraction of the best HTTP rate (0 skips).")
    ] = 0.5,
    setting: Annotated[
        list[str] | None, typer.Option(help="A gateway setting, SAMO_NAME=value (repeatable).")
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="A gateway setting, SAMO_NAME=value, measured after the run with the others in the same "
            "run: one more set of rows (repeatable; e.g. SAMO_HTTP_SERVER=granian)."
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Folder for overhead.md and overhead.json.")] = Path(
        "load_tests/results"
    ),
) -> None:
    """The stack's own CPU per text, with a classifier that costs nearly nothing: HTTP (wrk) and gRPC,
    closed loop at each concurrency and open loop, CPU by process."""
    setup_logging()
    from load_tests.bench_overhead import OverheadOptions, run_overhead

    options = OverheadOptions(
        concurrency=_counts(concurrency),
        duration_s=duration,
        warmup_s=warmup,
        grpc_clients=grpc_clients,
        open_loop_fraction=open_loop,
        settings=_settings(setting or []),
        compare=_settings(compare or []),
        output_dir=output,
    )
    typer.echo(run_overhead(options))


@bench_app.command("profile-gateway")
def bench_profile_command(
    model: Annotated[
        str, typer.Option(help="bert-base, minilm-zero-shot or near-free.")
    ] = "minilm-zero-shot",
    quantize: Annotated[
        Literal["none", "int8"], typer.Option(help="The served graph: none | int8.")
    ] = "int8",
    concurrency: Annotated[int, typer.Option(help="Closed-loop clients while sampling.")] = 32,
    duration: Annotated[
        float, typer.Option(help="Seconds sampled (twice: stacks, then flame graph).")
    ] = 20.0,
    transport: Annotated[
        Literal["http", "grpc"], typer.Option(help="The load's transport: http | grpc.")
    ] = "http",
    output: Annotated[Path, typer.Option(help="Folder for the report and its flame graph.")] = Path(
        "load_tests/results"
    ),
) -> None:
    """py-spy on the gateway under load: the functions with the most samples, and a flame graph."""
    setup_logging()
    from load_tests.bench_profile import ProfileOptions, run_profile

    options = ProfileOptions(
        model=model,
        quantize=quantize,
        concurrency=concurrency,
        duration_s=duration,
        output_dir=output,
        transport=transport,
    )
    typer.echo(run_profile(options))


@eval_app.command("summarizer")
def eval_summarizer_command(
    data: Annotated[Literal["aclsum"], typer.Option(help="Data set: aclsum.")] = "aclsum",
    split: Annotated[Literal["test", "val", "train"], typer.Option(help="test | val | train.")] = "test",
    sentences: Annotated[int, typer.Option(help="Sentences per summary, for both systems.")] = 3,
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
) -> None:
    """ROUGE-1/2/L of the extractive default and a lead-k baseline of the same length."""
    setup_logging()
    from load_tests.eval_summarizer import evaluate

    typer.echo(evaluate(split, sentences, output))
