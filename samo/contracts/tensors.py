"""Tensor and model contracts: names, dtypes and dims written once for every consumer."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum

import numpy as np

if sys.version_info >= (3, 11):  # noqa: UP036
    from enum import StrEnum
else:  # Python 3.10: Triton's GPU image runs the Python-backend models, which read contracts

    class StrEnum(str, Enum):  # noqa: UP042
        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class DataType(StrEnum):
    """Triton wire dtypes used by SAMO models (the `TYPE_` prefix is added for config.pbtxt)."""

    INT64 = "INT64"
    FP32 = "FP32"
    FP16 = "FP16"
    BYTES = "BYTES"

    @property
    def numpy(self) -> type[np.generic]:
        return _NUMPY[self]

    @property
    def config_name(self) -> str:
        # config.pbtxt spells the string type TYPE_STRING; the wire protocol calls it BYTES.
        return "TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.value}"


_NUMPY: dict[DataType, type[np.generic]] = {
    DataType.INT64: np.int64,
    DataType.FP32: np.float32,
    DataType.FP16: np.float16,
    DataType.BYTES: np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor. `dims` exclude the batch axis; -1 marks a dynamic axis.

    `axes` names every axis including the batch axis, as ONNX dynamic axes (`batch_size`, ...).
    `ragged` lets Triton's dynamic batcher put requests of different lengths into one batch; the
    model then pads the batch itself.
    """

    name: str
    dtype: DataType
    dims: tuple[int, ...]
    axes: tuple[str, ...]
    ragged: bool = False
    label_file: str | None = None

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.dims) + 1:
            raise ValueError(
                f"tensor `{self.name}`: `axes` must name the batch axis and every dim "
                f"({len(self.dims) + 1} names), got {len(self.axes)}"
            )

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """ONNX export's dynamic axes: the batch axis and every -1 dim."""
        dims = (-1, *self.dims)
        return {i: name for i, (name, dim) in enumerate(zip(self.axes, dims, strict=True)) if dim == -1}


@dataclass(frozen=True)
class ModelContract:
    """The tensors a served model takes and returns, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return _find(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _find(self.outputs, name, "output")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _find(tensors: tuple[TensorSpec, ...], name: str, kind: str) -> TensorSpec:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    known = ", ".join(t.name for t in tensors)
    raise KeyError(f"no {kind} tensor `{name}`; the contract has: {known}")
