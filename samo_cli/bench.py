"""`samo bench ...` and `samo eval ...`: benchmarks and quality evaluations that print tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from samo_cli.common import setup_logging

bench_app = typer.Typer(no_args_is_help=True, help="Side-by-side benchmarks that print tables.")
eval_app = typer.Typer(no_args_is_help=True, help="Quality evaluations on real data.")


def _counts(values: str) -> tuple[int, ...]:
    return tuple(int(v) for v in values.split(","))


@bench_app.command("emotion")
def bench_emotion_command(
    duration: Annotated[float, typer.Option(help="Seconds per measurement.")] = 8.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32",
    models: Annotated[
        str, typer.Option(help="Comma-separated: bert-base, minilm-zero-shot.")
    ] = "bert-base,minilm-zero-shot",
    output: Annotated[Path, typer.Option(help="Folder for the result tables.")] = Path("load_tests/results"),
    quantize: Annotated[
        Literal["none", "int8"], typer.Option(help="Export the served graphs with none | int8.")
    ] = "none",
) -> None:
    """Naive FastAPI + PyTorch vs in-process ONNX Runtime vs gateway + Triton, one table."""
    setup_logging()
    from load_tests.bench_emotion import BenchOptions, run_benchmark

    options = BenchOptions(
        duration_s=duration,
        concurrency=_counts(concurrency),
        models=tuple(m.strip() for m in models.split(",")),
        output_dir=output,
        quantize=quantize,
    )
    typer.echo(run_benchmark(options))


@bench_app.command("whisper")
def bench_whisper_command(
    duration: Annotated[float, typer.Option(help="Seconds per row.")] = 90.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts for the stack.")] = "1,8",
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
) -> None:
    """faster-whisper in-process, one file at a time, vs gateway + Triton (CTranslate2), one table."""
    setup_logging()
    from load_tests.bench_whisper import WhisperBenchOptions, run_whisper_benchmark

    options = WhisperBenchOptions(duration_s=duration, concurrency=_counts(concurrency), output_dir=output)
    typer.echo(run_whisper_benchmark(options))


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
