"""How text encoders (emotion classifiers, the sentence embedder) are served by Triton."""

from __future__ import annotations

from dataclasses import dataclass

from exporters.model_folder import MODEL_VERSION as MODEL_VERSION  # where readers of model.onnx look
from samo.contracts.text import (
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_INTRA_OP_THREADS,
    ENCODER_MAX_BATCH_SIZE,
    INPUT_IDS,
    EncoderTarget,
)
from samo.torch_encoding import CompileMode, Head, Precision
from samo.triton.encoder_shapes import EncoderShapes
from samo.triton.model_config import DynamicBatching, QueuePolicy, ServingOptions, Warmup

ONNX_FILE = "model.onnx"
BACKEND = "encoder"
"""The Python-backend model (`samo/triton/backends/encoder.py`) that serves them on CPU."""
TORCH_BACKEND = "torch_encoder"
"""The Python-backend model (`samo/triton/backends/torch_encoder.py`) that serves `--target gpu-torch`."""
# Sub-batch limits for PyTorch: a GPU wants large sub-batches; each is padded to a multiple of 16 tokens.
TORCH_BUCKET_MULTIPLE = 16
TORCH_SUB_BATCH_ROWS = ENCODER_MAX_BATCH_SIZE
TORCH_SUB_BATCH_TOKENS = 16384
# From `samo bench sweep` (load_tests/results/sweep.md, 2 cores, c=1 p50 / c=32 throughput): emotion 0 us
# 8.7 ms / 158 req/s, 100 us 9.3 / 146, 1000 us 10.9 / 147, 5000 us 15.7 / 152: within run-to-run noise
# (about 8 %) but a lone request waits out the delay; embedder 0 us 39 req/s (batches of 29 sentences)
# against 44 at 100 us (60), so not 0. Preferred sizes and 2 instances x 1 thread did not beat 16,32 and
# 1 x 2 threads beyond noise.
QUEUE_DELAY_US = 100
PREFERRED_BATCH_SIZES = (16, 32)
# A request is up to a card's batch of texts, milliseconds of work each: 512 waiting requests are seconds
# of work on a CPU; one still queued at its request's deadline is dropped (no default queue timeout:
# samo.triton.model_config.QueuePolicy says why).
QUEUE = QueuePolicy(max_queue_size=512)


@dataclass(frozen=True)
class TorchServing:
    """What `--target gpu-torch` adds: the head to rebuild, the precision on GPU, the token limit."""

    head: Head
    max_length: int
    precision: Precision = "fp16"
    compile: CompileMode = "off"


def encoder_backend(target: EncoderTarget) -> str:
    """The `samo.triton.backends` module copied as `model.py` (unused by `gpu`, NVIDIA's backend)."""
    return TORCH_BACKEND if target == "gpu-torch" else BACKEND


def encoder_serving_options(
    *,
    target: EncoderTarget,
    padding_mask: str,
    pad_token_id: int,
    max_batch_size: int,
    max_length: int | None = None,
    intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    instance_count: int = DEFAULT_INSTANCE_COUNT,
    torch_serving: TorchServing | None = None,
    response_cache: bool = False,
) -> ServingOptions:
    """cpu: the Python-backend model over ONNX Runtime with ragged inputs; gpu: NVIDIA's ONNX Runtime
    backend with the TensorRT accelerator in fp16; gpu-torch: the Python-backend model over PyTorch
    with ragged inputs, on each GPU (`KIND_AUTO`: on the CPU in fp32 where the server has none).
    `max_batch_size` and `max_length` come from the model card, which the gateway reads to split and pad
    its requests; on `gpu` they bound TensorRT's optimization profile (`samo.triton.encoder_shapes`)."""
    batching = DynamicBatching(
        max_queue_delay_us=QUEUE_DELAY_US, preferred_batch_sizes=PREFERRED_BATCH_SIZES, queue=QUEUE
    )
    pad_values = f'{{"{INPUT_IDS}": {pad_token_id}}}'
    if target == "gpu-torch":
        if torch_serving is None:
            raise ValueError("`--target gpu-torch` needs its torch serving options (head, max length)")
        return ServingOptions(
            backend="python",
            max_batch_size=max_batch_size,
            batching=batching,
            instance_count=instance_count,
            instance_kind="KIND_AUTO",
            response_cache=response_cache,
            parameters={
                "head": torch_serving.head,
                "precision": torch_serving.precision,
                "compile": torch_serving.compile,
                "padding_mask_input": padding_mask,
                "pad_values": pad_values,
                "max_length": str(torch_serving.max_length),
                "bucket_multiple": str(TORCH_BUCKET_MULTIPLE),
                "sub_batch_rows": str(TORCH_SUB_BATCH_ROWS),
                "sub_batch_tokens": str(TORCH_SUB_BATCH_TOKENS),
                "intra_op_threads": str(intra_op_threads),
            },
        )
    if target == "gpu":
        if max_length is None:
            raise ValueError(
                "`--target gpu` needs the card's `max_length` for TensorRT's optimization profile"
            )
        shapes = EncoderShapes(max_batch_size=max_batch_size, max_length=max_length)
        return ServingOptions(
            backend="onnxruntime",
            max_batch_size=max_batch_size,
            batching=batching,
            instance_count=instance_count,
            instance_kind="KIND_GPU",
            response_cache=response_cache,
            default_model_filename=ONNX_FILE,
            tensorrt_fp16=True,
            tensorrt_shapes=shapes,
            # Every corner of the profile runs before the model reports ready.
            warmup=tuple(Warmup(batch, length) for batch, length in shapes.corners),
        )
    return ServingOptions(
        backend="python",
        max_batch_size=max_batch_size,
        batching=batching,
        instance_count=instance_count,
        response_cache=response_cache,
        parameters={
            "onnx_file": ONNX_FILE,
            "padding_mask_input": padding_mask,
            "pad_values": pad_values,
            "intra_op_threads": str(intra_op_threads),
        },
    )
