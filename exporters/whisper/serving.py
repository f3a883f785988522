"""How every Whisper model (CTranslate2 or ONNX) is served by Triton: one Python-backend model over the
Whisper contract, dynamic batching of audio windows."""

from __future__ import annotations

import json
from typing import Literal

from samo.contracts.whisper import OPTIONS, SAMPLE_RATE
from samo.triton.model_config import DynamicBatching, QueuePolicy, ServingOptions, Warmup

# Instances of a Whisper model on the CPU, each with its share of the cores (`intra_threads` `auto`).
# A model instance spends part of each batch on one thread (log-mel features, segments, JSON, reading
# the requests), so with one instance of two threads a core idles meanwhile; two instances keep both
# busy. `samo bench whisper --audio read-speech` on 2 cores, c=8 (docs/benchmarks/whisper.md):
# 2 x 1 thread 46.6 audio s/s, 1 x 2 threads 36.4.
CPU_INSTANCES = 2
# Windows decoded in one generate call. Larger batches raise throughput while the CPU has headroom.
MAX_BATCH_SIZE = 8
# A window takes hundreds of milliseconds to decode, so a millisecond of waiting costs little and
# lets concurrent requests meet.
QUEUE_DELAY_US = 2000
# A request is one 30 s window, hundreds of milliseconds to decode on a CPU; a long recording sends many.
# Beyond 256 waiting windows Triton refuses (429); a window still queued at its request's deadline is
# dropped (no default queue timeout: samo.triton.model_config.QueuePolicy says why).
QUEUE = QueuePolicy(max_queue_size=256)
# Triton's warm-up request: one second of silence, decoded greedily. Beam search (the default) makes
# up about 200 tokens of text on silence: 7 s of CPU for tiny.en in ONNX at every load, where greedy
# stops after 2 to 4 tokens and warms the same encoder and decoder.
WARMUP_SAMPLES = SAMPLE_RATE
WARMUP_OPTIONS = json.dumps({"beam_size": 1}).encode()


def language_names(codes: tuple[str, ...]) -> dict[str, str]:
    """English names of Whisper's languages for the model card, from transformers' Whisper tokenizer."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return {code: LANGUAGES.get(code, code) for code in codes}


def whisper_serving_options(
    target: Literal["cpu", "gpu"], parameters: dict[str, str], instances: int | None = None
) -> ServingOptions:
    return ServingOptions(
        instance_count=instances or (1 if target == "gpu" else CPU_INSTANCES),
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        batching=DynamicBatching(max_queue_delay_us=QUEUE_DELAY_US, queue=QUEUE),
        instance_kind="KIND_GPU" if target == "gpu" else "KIND_CPU",
        warmup=Warmup(batch_size=1, sequence_length=WARMUP_SAMPLES, data={OPTIONS: WARMUP_OPTIONS}),
        parameters=parameters,
    )
