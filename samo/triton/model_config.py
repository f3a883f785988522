"""config.pbtxt generated from a model contract through Triton's own protobuf, never from templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc.model_config_pb2 import (
    ModelConfig,  # pyright: ignore[reportAttributeAccessIssue]  # generated protobuf code: no stubs
)

from samo.contracts.tensors import ModelContract, TensorSpec
from samo.triton.encoder_shapes import EncoderShapes

CONFIG_FILE = "config.pbtxt"
WARMUP_DIR = "warmup"
"""Where `model_warmup` reads the files of its inputs that are not zeros (in the model folder)."""
TENSORRT_CACHE = "/cache/tensorrt"


@dataclass(frozen=True)
class QueuePolicy:
    """How much waiting a model's queue takes before Triton turns requests away (UNAVAILABLE, which the
    gateway answers with 429 or 503 and Retry-After) instead of letting the queue, and latency, grow.

    `max_queue_size`: requests waiting beyond those being run; one more is refused at once ("Exceeds
    maximum queue size"). `timeout_us`: a request not started by then is rejected ("Request timeout
    expired"); 0, the default, sets none, and each request's own timeout applies (the gateway sends its
    deadline). Requests may shorten a set timeout, never lengthen it.

    Why none by default: with a default timeout Triton's dynamic batcher turns off prefetching and gates
    dispatch on a count of waiting instances that drifts each time it merges queued payloads
    (triton-inference-server/server#8870, fixed in core#509, not in the tritonserver that the pip wheel
    ships). Measured here: a request at concurrency 1 then waited ~500 ms (the batcher's idle wait)
    several times a second whenever another request arrived beside it (the health probes did), 130 to
    230 texts/s and p99 490 ms at c=1 against 560 to 650 texts/s and p99 under 3 ms without one.
    """

    max_queue_size: int = 256
    timeout_us: int = 0

    def __post_init__(self) -> None:
        if self.max_queue_size < 1:
            raise ValueError(f"`max_queue_size` must be at least 1, got {self.max_queue_size}")
        if self.timeout_us < 0:
            raise ValueError(f"`timeout_us` must be 0 (none) or more, got {self.timeout_us}")


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher. A lone request waits the full queue delay, so keep it short:
    batches form on their own while the model is busy."""

    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = ()
    queue: QueuePolicy = QueuePolicy()
    priority_levels: int = 2
    """Queues by priority: level 1 (the default, interactive requests) is always served before level 2
    (batch lines, which the gateway sends with priority 2); 0 or 1: one queue."""


@dataclass(frozen=True)
class Warmup:
    """A request Triton runs before the model reports ready: zeros, but for the inputs in `data` (one
    BYTES element each, which Triton reads from a file in `warmup/`)."""

    batch_size: int = 1
    sequence_length: int = 16
    data: Mapping[str, bytes] = field(default_factory=dict)


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
    tensorrt_shapes: EncoderShapes | None = None
    """The shapes TensorRT's optimization profile covers (min/opt/max over batch and tokens); without
    them ONNX Runtime builds a new engine for every new shape, under traffic."""
    warmup: Warmup | tuple[Warmup, ...] | None = Warmup()
    parameters: Mapping[str, str] = field(default_factory=dict)
    decoupled: bool = False
    """Responses are sent by the model as they are ready (streaming), any number per request."""
    response_cache: bool = False
    """Triton answers a request equal to an earlier one from its response cache (the server needs
    `--cache-config`; see `response_cache_args` in samo.triton.local_server)."""

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
        if self.tensorrt_shapes and not self.tensorrt_fp16:
            raise ValueError("`tensorrt_shapes` needs the TensorRT accelerator (`tensorrt_fp16`)")
        if self.tensorrt_shapes and self.tensorrt_shapes.max_batch_size != self.max_batch_size:
            raise ValueError(
                f"`tensorrt_shapes` cover batches up to {self.tensorrt_shapes.max_batch_size}, "
                f"`max_batch_size` is {self.max_batch_size}"
            )


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "data_type": spec.dtype.config_name, "dims": list(spec.dims)}
    if spec.ragged:
        entry["allow_ragged_batch"] = True
    if spec.label_file:
        entry["label_filename"] = spec.label_file
    return entry


def _warmups(options: ServingOptions) -> list[tuple[str, Warmup]]:
    """The warm-up samples by name: one keeps the name it always had; several are named by their shape."""
    if not options.warmup:
        return []
    if isinstance(options.warmup, Warmup):
        return [("zeros", options.warmup)]
    return [(f"zeros_{w.batch_size}x{w.sequence_length}", w) for w in options.warmup]


def _warmup_file(sample: str, tensor: str) -> str:
    return f"{sample}.{tensor}"


def _warmup(contract: ModelContract, options: ServingOptions) -> list[dict[str, Any]]:
    samples = []
    for name, warmup in _warmups(options):
        inputs = {}
        for spec in contract.inputs:
            entry: dict[str, Any] = {
                "data_type": spec.dtype.config_name,
                "dims": [warmup.sequence_length if d == -1 else d for d in spec.dims],
            }
            if spec.name in warmup.data:
                entry["input_data_file"] = _warmup_file(name, spec.name)
            else:
                entry["zero_data"] = True
            inputs[spec.name] = entry
        samples.append({"name": name, "batch_size": warmup.batch_size, "inputs": inputs})
    return samples


def write_warmup_files(model_dir: Path, options: ServingOptions) -> None:
    """The files of `Warmup.data` in `warmup/`: a BYTES element as Triton reads one, its length (4 bytes,
    little-endian) and then its bytes."""
    for name, warmup in _warmups(options):
        for tensor, value in warmup.data.items():
            folder = model_dir / WARMUP_DIR
            folder.mkdir(exist_ok=True)
            (folder / _warmup_file(name, tensor)).write_bytes(len(value).to_bytes(4, "little") + value)


def _tensorrt(contract: ModelContract, shapes: EncoderShapes | None) -> dict[str, Any]:
    parameters = {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(2 << 30),
        # Engines take minutes to build: they are built once (`samo build-engines`) into the cache, a
        # persistent volume, and every later start deserializes them. The timing cache speeds rebuilds.
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": TENSORRT_CACHE,
        "trt_timing_cache_enable": "true",
        "trt_timing_cache_path": TENSORRT_CACHE,
    }
    if shapes:
        # One profile over every shape the gateway sends: no shape ever triggers a rebuild.
        names = [spec.name for spec in contract.inputs if -1 in spec.dims]
        parameters["trt_profile_min_shapes"] = shapes.profile(names, shapes.min)
        parameters["trt_profile_opt_shapes"] = shapes.profile(names, shapes.opt)
        parameters["trt_profile_max_shapes"] = shapes.profile(names, shapes.max)
    return {"name": "tensorrt", "parameters": parameters}


def build_model_config(name: str, contract: ModelContract, options: ServingOptions) -> ModelConfig:
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
        batching["default_queue_policy"] = {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": options.batching.queue.timeout_us,
            "allow_timeout_override": True,
            "max_queue_size": options.batching.queue.max_queue_size,
        }
        if options.batching.priority_levels > 1:
            batching["priority_levels"] = options.batching.priority_levels
            batching["default_priority_level"] = 1
        config["dynamic_batching"] = batching
    if options.warmup:
        config["model_warmup"] = _warmup(contract, options)
    if options.decoupled:
        config["model_transaction_policy"] = {"decoupled": True}
    if options.response_cache:
        config["response_cache"] = {"enable": True}
    if options.parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in options.parameters.items()}
    if options.tensorrt_fp16:
        tensorrt = _tensorrt(contract, options.tensorrt_shapes)
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [tensorrt]}}
    return json_format.ParseDict(config, ModelConfig())


def render_model_config(config: ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_model_config(model_dir: Path, config: ModelConfig) -> Path:
    path = model_dir / CONFIG_FILE
    path.write_text(render_model_config(config))
    return path


def read_model_config(model_dir: Path) -> ModelConfig:
    return text_format.Parse((model_dir / CONFIG_FILE).read_text(), ModelConfig())
