"""Does the model Triton serves take what the gateway sends? The card's contract against Triton's config.

The gateway builds its requests from each model's card (`samo.json`: tensor names, dtypes, label count,
token type ids, rows per call) read from its own copy of the repository; Triton serves whatever its copy
holds. When the two copies drift (a new export on Triton's volume, an old one in the gateway), requests
would fail or, worse, be read with another model's labels. So before a model serves, its contract is
compared with the configuration Triton reports for it (`get_model_config`), and a model that differs is
refused (gateway/triton_router.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonclient.grpc.model_config_pb2 import (
    DataType,  # pyright: ignore[reportAttributeAccessIssue]  # generated protobuf code: no stubs
    ModelConfig,  # pyright: ignore[reportAttributeAccessIssue]  # generated protobuf code: no stubs
)

from samo.contracts.tensors import ModelContract, TensorSpec


@dataclass(frozen=True)
class ExpectedModel:
    """What the gateway sends to one Triton model and reads back."""

    name: str
    contract: ModelContract
    rows: int
    """The most rows (texts, windows) the gateway puts in one call: Triton's max_batch_size must allow it."""


def _dtype(config_tensor: Any) -> str:
    return DataType.Name(config_tensor.data_type)


def _tensor_differences(kind: str, spec: TensorSpec, served: Any) -> list[str]:
    differences = []
    if _dtype(served) != spec.dtype.config_name:
        differences.append(
            f"{kind} `{spec.name}` is {_dtype(served)} in Triton, {spec.dtype.config_name} in the card"
        )
    if tuple(served.dims) != spec.dims:
        differences.append(
            f"{kind} `{spec.name}` has dims {list(served.dims)} in Triton, {list(spec.dims)} in the card"
        )
    if kind == "input" and bool(served.allow_ragged_batch) != spec.ragged:
        # Ragged inputs: the model pads each batch. Not ragged: the gateway must pad to batch (GPU export).
        differences.append(
            f"input `{spec.name}` is {'' if served.allow_ragged_batch else 'not '}ragged in Triton, "
            f"{'' if spec.ragged else 'not '}ragged in the card (target cpu/gpu-torch against gpu)"
        )
    return differences


def mismatches(expected: ExpectedModel, config: ModelConfig) -> list[str]:
    """How Triton's `config` differs from what the gateway sends and reads; empty when it matches."""
    differences = []
    if config.max_batch_size < expected.rows:
        differences.append(
            f"max_batch_size is {config.max_batch_size} in Triton, the card sends up to {expected.rows} rows"
        )
    served_inputs = {tensor.name: tensor for tensor in config.input}
    for spec in expected.contract.inputs:
        if spec.name not in served_inputs:
            differences.append(f"input `{spec.name}` of the card is not an input of Triton's model")
        else:
            differences += _tensor_differences("input", spec, served_inputs[spec.name])
    sent = set(expected.contract.input_names)
    differences += [
        f"Triton's model requires input `{name}`, which the card does not send"
        for name, tensor in served_inputs.items()
        if name not in sent and not tensor.optional
    ]
    served_outputs = {tensor.name: tensor for tensor in config.output}
    for spec in expected.contract.outputs:
        if spec.name not in served_outputs:
            differences.append(f"output `{spec.name}` of the card is not an output of Triton's model")
        else:
            differences += _tensor_differences("output", spec, served_outputs[spec.name])
    return differences
