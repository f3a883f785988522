"""What every command group shares: logging, the error exit, the repository option, the choices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from gateway.observability.logging import configure_logging

Target = Literal["cpu", "gpu"]
EncoderTarget = Literal["cpu", "gpu", "gpu-torch"]
"""`samo.contracts.text.EncoderTarget`, spelled here so that `samo --help` imports no model code."""
Precision = Literal["fp16", "bf16"]
CompileMode = Literal["off", "reduce-overhead", "max-autotune"]

RepositoryOption = Annotated[Path, typer.Option("--repository", help="Triton model repository folder.")]


def setup_logging(verbose: bool = False) -> None:
    """Our packages at INFO (DEBUG when `verbose`), the root at WARNING, text lines as the gateway
    writes them (`run_gateway` applies the gateway's `log_format` and `log_level`)."""
    configure_logging("text", "DEBUG" if verbose else "INFO")


def fail(message: str) -> typer.Exit:
    """Print the error in red and exit 2, as typer does for a bad option."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)
