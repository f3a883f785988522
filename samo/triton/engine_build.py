"""Building TensorRT engines on purpose: every shape the gateway can send, once, before any traffic.

`build_engines` sends each text encoder in a running Triton (the emotion classifiers, the embedder)
every (batch, tokens) bucket of `EncoderShapes.every_bucket`, one request at a time so that each
request is one execution of exactly that shape. On `--target gpu` models ONNX Runtime's TensorRT
provider writes its engines to the cache path of the model's config (`trt_engine_cache_path`, a
persistent volume); on CPU models the same shapes run on ONNX Runtime, which proves the requests.

Verification: every answer has the right shape and finite values; then the smallest and largest
shapes are sent again and the engine cache must not change (no shape needed a new engine).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samo.contracts.cards import CARD_FILE
from samo.contracts.embedding import EmbeddingModelCard
from samo.contracts.emotion import EmotionModelCard
from samo.contracts.text import ATTENTION_MASK, TOKEN_TYPE_IDS
from samo.triton.encoder_shapes import EncoderShapes

logger = logging.getLogger(__name__)

Card = EmotionModelCard | EmbeddingModelCard
TASKS: dict[str, type[Card]] = {"emotion": EmotionModelCard, "embedding": EmbeddingModelCard}


class EngineBuildError(RuntimeError):
    """A shape failed, answered wrongly, or left the engine cache changing."""


@dataclass(frozen=True)
class EncoderModel:
    name: str
    card: Card

    @property
    def shapes(self) -> EncoderShapes:
        return EncoderShapes(max_batch_size=self.card.max_batch_size, max_length=self.card.max_length)


@dataclass
class ModelReport:
    name: str
    shapes: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    cache_path: str | None = None
    engine_files: list[str] = field(default_factory=list)


def text_encoders(repository: Path) -> list[EncoderModel]:
    """The repository's text encoders, by their cards; other models (Whisper, summarizers) have no
    TensorRT engines to build."""
    models = []
    for card_file in sorted(repository.glob(f"*/{CARD_FILE}")):
        task = json.loads(card_file.read_text()).get("task")
        if task in TASKS:
            models.append(EncoderModel(card_file.parent.name, TASKS[task].read(card_file.parent)))
    return models


def _inputs(model: EncoderModel, batch: int, length: int) -> dict[str, np.ndarray]:
    """Every row `length` real tokens (the CPU models strip padding; TensorRT sees the shape either way)."""
    ids = np.full((batch, length), model.card.pad_token_id + 1, dtype=np.int64)
    arrays = {name: ids for name in model.card.contract.model.input_names}
    arrays[ATTENTION_MASK] = np.ones((batch, length), dtype=np.int64)
    if TOKEN_TYPE_IDS in arrays:
        arrays[TOKEN_TYPE_IDS] = np.zeros((batch, length), dtype=np.int64)
    return arrays


def _cache_path(config: dict[str, Any]) -> str | None:
    accelerators = config.get("optimization", {}).get("execution_accelerators", {})
    for accelerator in accelerators.get("gpu_execution_accelerator", []):
        if accelerator.get("name") == "tensorrt":
            return accelerator.get("parameters", {}).get("trt_engine_cache_path")
    return None


def _cache_state(path: str | None) -> dict[str, tuple[int, int]]:
    """Engine cache files with their size and modification time; empty when there is no local cache."""
    if path is None or not Path(path).is_dir():
        return {}
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }


def _send(client: Any, model: EncoderModel, batch: int, length: int) -> None:
    """One request of one shape; its answer must have one finite row per text."""
    import tritonclient.http as httpclient

    output = model.card.contract.model.outputs[0]
    width = output.dims[0]
    inputs = []
    for name, array in _inputs(model, batch, length).items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    try:
        result = client.infer(model.name, inputs)
    except Exception as exc:
        raise EngineBuildError(f"`{model.name}` failed on shape {batch}x{length}: {exc}") from exc
    values = result.as_numpy(output.name)
    if values is None or values.shape != (batch, width) or not np.isfinite(values).all():
        shape = None if values is None else values.shape
        raise EngineBuildError(
            f"`{model.name}` answered shape {batch}x{length} with {shape}, expected ({batch}, {width}) "
            "finite values"
        )


def build_engines(
    client: Any, models: list[EncoderModel], progress: Callable[[str], None] = logger.info
) -> list[ModelReport]:
    """Send every shape to every model through `client` (tritonclient.http.InferenceServerClient)."""
    reports = []
    for model in models:
        config = client.get_model_config(model.name)
        report = ModelReport(model.name, cache_path=_cache_path(config))
        start = time.monotonic()
        for batch, length in model.shapes.every_bucket:
            _send(client, model, batch, length)
            report.shapes.append((batch, length))
        report.seconds = time.monotonic() - start
        built = _cache_state(report.cache_path)
        # The profile's corners again: a shape outside the built engines would make a new one now.
        for batch, length in (model.shapes.min, model.shapes.max):
            _send(client, model, batch, length)
        if _cache_state(report.cache_path) != built:
            raise EngineBuildError(
                f"`{model.name}`: the engine cache {report.cache_path} changed when shapes were sent again; "
                "an engine does not cover every shape (check trt_profile_*_shapes in its config.pbtxt)"
            )
        report.engine_files = sorted(built)
        progress(
            f"{model.name}: {len(report.shapes)} shapes in {report.seconds:.1f} s "
            f"({math.ceil(report.seconds / max(len(report.shapes), 1) * 1000)} ms each), "
            f"{len(report.engine_files)} file(s) in the engine cache"
        )
        reports.append(report)
    return reports
