"""`samo convert ...`: model format conversions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from samo_cli.common import fail

app = typer.Typer(no_args_is_help=True, help="Convert checkpoints between formats.")


@app.callback()
def _convert_group() -> None:
    """Convert checkpoints between formats."""


@app.command("ct2-whisper")
def ct2_whisper_command(
    ct2_dir: Annotated[
        Path,
        typer.Argument(
            help="CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary)."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for the Hugging Face checkpoint (created if needed).")
    ],
) -> None:
    """Convert a CTranslate2 Whisper model (e.g. faster-whisper's) back to a Hugging Face checkpoint, losslessly."""
    from exporters.onnx_tools import ExportError
    from exporters.whisper.ct2_convert import convert_ct2_whisper

    try:
        report = convert_ct2_whisper(ct2_dir, out_dir)
    except (ExportError, ValueError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.summary())
