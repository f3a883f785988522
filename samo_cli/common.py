"""What every command group shares: logging, the error exit, the repository option, the choices."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

Target = Literal["cpu", "gpu"]
EncoderTarget = Literal["cpu", "gpu", "gpu-torch"]
"""`samo.contracts.text.EncoderTarget`, spelled here so that `samo --help` imports no model code."""
Precision = Literal["fp16", "bf16"]
CompileMode = Literal["off", "reduce-overhead", "max-autotune"]

RepositoryOption = Annotated[Path, typer.Option("--repository", help="Triton model repository folder.")]


def setup_logging(verbose: bool = False) -> None:
    # Root stays at WARNING: onnxruntime's quantizer logs every tensor at INFO through it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("samo", "samo_cli", "exporters", "gateway", "load_tests"):
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def fail(message: str) -> typer.Exit:
    """Print the error in red and exit 2, as typer does for a bad option."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)
