"""Tensors every text model SAMO serves shares: token inputs, the tokenizer folder and the batch limit.

The emotion classifiers, the sentence embedder and the summarizers all read token ids named here.
"""

from __future__ import annotations

from typing import Literal

from samo.contracts.tensors import DataType, TensorSpec

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
TOKENIZER_DIR = "tokenizer"
"""The model folder's copy of the tokenizer, read by the gateway."""

TOKEN_AXES = ("batch_size", "sequence_length")

ENCODER_MAX_BATCH_SIZE = 64
"""Texts in one call to a text encoder (emotion, embedder): Triton's `max_batch_size` for them, and the
most texts the gateway sends in one request."""

# Triton instances of a text encoder x intra-op threads each (`samo export emotion|embedder --instances
# --threads`). From `samo bench sweep` on 2 cores (load_tests/results/sweep.md, MiniLM, c=32): 1 x 2
# threads 146 texts/s, p99 274 ms; 2 x 1 161, p99 424 ms; 2 x 2 146, p99 419 ms. A second instance splits
# the batches (mean 16 texts per execution fell to 7) and raises p99 by half for no gain beyond the run's
# noise (about 8 %). On a GPU a second instance can overlap one batch's host work with the other's
# kernels: `load_tests/gpu/gpu_check.py` measures 1, 2 and 4 per GPU.
DEFAULT_INSTANCE_COUNT = 1
DEFAULT_INTRA_OP_THREADS = 2


EncoderTarget = Literal["cpu", "gpu", "gpu-torch"]
"""Where a text encoder runs: `cpu` (ONNX Runtime in the Python backend), `gpu` (NVIDIA's ONNX Runtime
backend with TensorRT) or `gpu-torch` (PyTorch in the Python backend, on the instance's GPU)."""


def ragged_inputs(target: EncoderTarget) -> bool:
    """Whether the token inputs are ragged: the Python-backend models pad each dynamic batch
    themselves; NVIDIA's ONNX Runtime backend batches equal shapes only (the gateway pads to match)."""
    return target != "gpu"


def token_inputs(*, token_type_ids: bool, ragged: bool) -> tuple[TensorSpec, ...]:
    """Token ids, mask and (BERT) segment ids: the inputs of every text encoder SAMO serves."""
    names = [INPUT_IDS, ATTENTION_MASK] + ([TOKEN_TYPE_IDS] if token_type_ids else [])
    return tuple(TensorSpec(name, DataType.INT64, (-1,), TOKEN_AXES, ragged=ragged) for name in names)
