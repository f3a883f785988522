"""How text encoders (emotion classifiers, the sentence embedder) are served by Triton."""

from __future__ import annotations

from typing import Literal

from exporters.model_folder import MODEL_VERSION as MODEL_VERSION  # where readers of model.onnx look
from samo.contracts.text import ENCODER_MAX_BATCH_SIZE, INPUT_IDS
from samo.triton.model_config import DynamicBatching, ServingOptions

ONNX_FILE = "model.onnx"
BACKEND = "encoder"
"""The Python-backend model (`samo/triton/backends/encoder.py`) that serves them on CPU."""
# Measured through the gateway on 2 cores (MiniLM, c=1 p50 / c=32 throughput): 100 us 11.9 ms / 96 req/s,
# 1000 us 13.5 ms / 114, 2000 us 16.1 ms / 110. Batches form on their own while the model is busy
# (12 to 14 requests each at c=32), and a lone request waits out the whole delay, so it stays short.
QUEUE_DELAY_US = 100
PREFERRED_BATCH_SIZES = (16, 32)


def encoder_serving_options(
    *,
    target: Literal["cpu", "gpu"],
    padding_mask: str,
    pad_token_id: int,
    intra_op_threads: int = 2,
    instance_count: int = 1,
) -> ServingOptions:
    """CPU: the Python-backend model over ONNX Runtime with ragged inputs; GPU: NVIDIA's ONNX Runtime
    backend with the TensorRT accelerator in fp16."""
    batching = DynamicBatching(max_queue_delay_us=QUEUE_DELAY_US, preferred_batch_sizes=PREFERRED_BATCH_SIZES)
    if target == "gpu":
        return ServingOptions(
            backend="onnxruntime",
            max_batch_size=ENCODER_MAX_BATCH_SIZE,
            batching=batching,
            instance_count=instance_count,
            instance_kind="KIND_GPU",
            default_model_filename=ONNX_FILE,
            tensorrt_fp16=True,
        )
    return ServingOptions(
        backend="python",
        max_batch_size=ENCODER_MAX_BATCH_SIZE,
        batching=batching,
        instance_count=instance_count,
        parameters={
            "onnx_file": ONNX_FILE,
            "padding_mask_input": padding_mask,
            "pad_values": f'{{"{INPUT_IDS}": {pad_token_id}}}',
            "intra_op_threads": str(intra_op_threads),
        },
    )
