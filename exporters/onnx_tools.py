"""Export to ONNX, validate against PyTorch, optimize and quantize: shared by every model family."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import torch

from exporters.errors import ExportError, ValidationError
from samo.contracts.tensors import ModelContract

logger = logging.getLogger(__name__)

OPSET = 17


def export_onnx(
    module: torch.nn.Module, contract: ModelContract, sample: Mapping[str, torch.Tensor], path: Path
) -> Path:
    """TorchScript-based export: ONNX Runtime's transformer optimizer fuses attention only on these graphs."""
    module.eval()
    dynamic_axes = {t.name: t.dynamic_axes for t in (*contract.inputs, *contract.outputs)}
    args = tuple(sample[name] for name in contract.input_names)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter(
            "ignore",
            category=torch.jit.TracerWarning,  # pyright: ignore[reportPrivateImportUsage]  # documented; not in torch's __all__
        )
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(contract.input_names),
            output_names=list(contract.output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path), load_external_data=False)
    names = tuple(i.name for i in graph.graph.input)
    if names != contract.input_names:
        raise ExportError(f"exported graph inputs {names} differ from the contract's {contract.input_names}")
    return path


def cpu_session(path: Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Session(Protocol):
    """What validation runs: an ONNX Runtime session, or `exporters.torch_target.ServedSession`."""

    def run(self, output_names: Sequence[str], input_feed: Mapping[str, np.ndarray], /) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ParityReport:
    cases: int
    max_abs_diff: float
    atol: float
    served: str = "onnx"
    """What was compared with PyTorch: `onnx`, or `served` (the gpu-torch checkpoint as served)."""

    def __str__(self) -> str:
        return f"{self.cases} batches, max |{self.served} - torch| = {self.max_abs_diff:.2e} (atol {self.atol:.0e})"


def validate_against_torch(
    module: torch.nn.Module,
    session: Session,
    batches: Sequence[Mapping[str, np.ndarray]],
    output: str,
    atol: float,
    served: str = "onnx",
) -> ParityReport:
    """Run every batch through both; raise ValidationError naming the worst batch beyond `atol`.

    Batches map input names to arrays in the contract's input order, the module's positional order.
    """
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            expected = module(*(torch.from_numpy(v) for v in batch.values())).numpy()
            actual = session.run([output], dict(batch))[0]
            if actual.shape != expected.shape:
                raise ValidationError(
                    f"`{output}` shape {actual.shape} differs from PyTorch's {expected.shape}"
                )
            diff = float(np.abs(actual - expected).max())
            worst = max(worst, diff)
            if diff > atol:
                shape = next(iter(batch.values())).shape
                raise ValidationError(
                    f"`{output}` differs from PyTorch by {diff:.2e} > atol {atol:.0e} on a batch of shape {shape}"
                )
    return ParityReport(cases=len(batches), max_abs_diff=worst, atol=atol, served=served)


def optimize_transformer(source: Path, target: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ORT transformer fusions (attention, layer norm, GELU); returns the count of each fused op."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(target))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def quantize_int8(source: Path, target: Path) -> None:
    """Per-channel dynamic int8: per-tensor scales lost much more accuracy on MiniLM (PLATFORM.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic leaves temporary files in the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def convert_fp16(source: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
