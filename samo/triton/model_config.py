"""config.pbtxt generated from a model contract through Triton's own protobuf, never from templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from samo.contracts.tensors import ModelContract, TensorSpec

CONFIG_FILE = "config.pbtxt"
TENSORRT_CACHE = "/cache/tensorrt"


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher. A lone request waits the full queue delay, so keep it short:
    batches form on their own while the model is busy."""

    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Warmup:
    """Zero-filled requests Triton runs before the model reports ready."""

    batch_size: int = 1
    sequence_length: int = 16


@dataclass(frozen=True)
class ServingOptions:
    backend: Literal["python", "onnxruntime"]
    max_batch_size: int
    batching: DynamicBatching | None = DynamicBatching()
    instance_count: int = 1
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"
    """`KIND_AUTO`: one instance group on each GPU when the server has GPUs, else on the CPU (protobuf
    omits this default value, so config.pbtxt shows no `kind`)."""
    default_model_filename: str | None = None
    tensorrt_fp16: bool = False
    warmup: Warmup | None = Warmup()
    parameters: Mapping[str, str] = field(default_factory=dict)
    decoupled: bool = False
    """Responses are sent by the model as they are ready (streaming), any number per request."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"`max_batch_size` must be at least 1, got {self.max_batch_size}")
        if self.instance_count < 1:
            raise ValueError(f"`instance_count` must be at least 1, got {self.instance_count}")
        if self.batching:
            too_big = [s for s in self.batching.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
            if too_big:
                raise ValueError(
                    f"`preferred_batch_sizes` {too_big} must lie in 1..{self.max_batch_size} (max_batch_size)"
                )
        if self.tensorrt_fp16 and self.instance_kind != "KIND_GPU":
            raise ValueError("`tensorrt_fp16` needs `instance_kind` KIND_GPU")


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "data_type": spec.dtype.config_name, "dims": list(spec.dims)}
    if spec.ragged:
        entry["allow_ragged_batch"] = True
    if spec.label_file:
        entry["label_filename"] = spec.label_file
    return entry


def _warmup(contract: ModelContract, warmup: Warmup) -> list[dict[str, Any]]:
    inputs = {
        spec.name: {
            "data_type": spec.dtype.config_name,
            "dims": [warmup.sequence_length if d == -1 else d for d in spec.dims],
            "zero_data": True,
        }
        for spec in contract.inputs
    }
    return [{"name": "zeros", "batch_size": warmup.batch_size, "inputs": inputs}]


def build_model_config(
    name: str, contract: ModelContract, options: ServingOptions
) -> model_config_pb2.ModelConfig:
    config: dict[str, Any] = {
        "name": name,
        "backend": options.backend,
        "max_batch_size": options.max_batch_size,
        "input": [_tensor(t) for t in contract.inputs],
        "output": [_tensor(t) for t in contract.outputs],
        "instance_group": [{"count": options.instance_count, "kind": options.instance_kind}],
    }
    if options.default_model_filename:
        config["default_model_filename"] = options.default_model_filename
    if options.batching:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": options.batching.max_queue_delay_us}
        if options.batching.preferred_batch_sizes:
            batching["preferred_batch_size"] = list(options.batching.preferred_batch_sizes)
        config["dynamic_batching"] = batching
    if options.warmup:
        config["model_warmup"] = _warmup(contract, options.warmup)
    if options.decoupled:
        config["model_transaction_policy"] = {"decoupled": True}
    if options.parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in options.parameters.items()}
    if options.tensorrt_fp16:
        tensorrt = {
            "name": "tensorrt",
            "parameters": {
                "precision_mode": "FP16",
                "max_workspace_size_bytes": str(2 << 30),
                # Engines take minutes to build; the cache (a volume in k8s/) survives restarts.
                "trt_engine_cache_enable": "true",
                "trt_engine_cache_path": TENSORRT_CACHE,
            },
        }
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [tensorrt]}}
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def render_model_config(config: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_model_config(model_dir: Path, config: model_config_pb2.ModelConfig) -> Path:
    path = model_dir / CONFIG_FILE
    path.write_text(render_model_config(config))
    return path


def read_model_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / CONFIG_FILE).read_text(), model_config_pb2.ModelConfig())
