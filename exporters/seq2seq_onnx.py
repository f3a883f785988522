"""Encoder-decoder export with past key values, through optimum's ONNX exporter.

Shared by the summarizers and Whisper: optimum writes `encoder_model.onnx`, `decoder_model.onnx`
and `decoder_with_past_model.onnx` (the layout `samo.generation.onnx_seq2seq` runs). optimum's own
validation only logs a warning when outputs differ, so callers validate the result themselves. The
merged decoder is not written: its `use_cache_branch` input has no batch dimension, which Triton's
batching cannot serve.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from exporters.onnx_tools import ExportError, quantize_int8
from samo.generation.onnx_seq2seq import ONNX_FILES

logger = logging.getLogger(__name__)


def export_with_past(model: str, task: str, output: Path) -> tuple[Path, ...]:
    """Export `model` (a local folder or hub id) for `task` into `output`; ExportError when it fails."""
    from optimum.exporters.onnx import main_export

    # Local folders must never reach for the hub; a hub id still may where one is reachable.
    offline = {"HF_HUB_OFFLINE": "1"} if Path(model).is_dir() else {}
    try:
        with _environment(offline):
            main_export(
                model, output=output, task=task, no_post_process=True, do_validation=False, device="cpu"
            )
    except OSError as exc:
        raise ExportError(f"cannot load `{model}`: {exc}") from exc
    except (ValueError, KeyError) as exc:
        raise ExportError(f"optimum cannot export `{model}` for {task}: {exc}") from exc
    files = tuple(output / name for name in ONNX_FILES)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"optimum did not write {', '.join(missing)}")
    return files


def quantize_files(files: tuple[Path, ...], output: Path) -> tuple[Path, ...]:
    """Per-channel dynamic int8 of every graph, written under `output` with the same names."""
    output.mkdir(parents=True, exist_ok=True)
    for source in files:
        quantize_int8(source, output / source.name)
    return tuple(output / f.name for f in files)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
