"""Triton's batching statistics for tests: how many executions served how many requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tritonclient.grpc.aio import InferenceServerClient


async def model_statistics(client: InferenceServerClient, model: str) -> Any:
    return (await client.get_inference_statistics(model)).model_stats[0]


async def batching_since(
    client: InferenceServerClient, model: str, before: Any, answered: int, timeout_s: float = 10.0
) -> tuple[int, int]:
    """(executions, inferences) since `before`, read once Triton has counted the `answered` successful
    requests: it records an execution's statistics after sending its responses, so a read made as soon
    as the answers arrive can miss the last executions (and then see none at all)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = await model_statistics(client, model)
        inferences = now.inference_count - before.inference_count
        if inferences >= answered or time.monotonic() > deadline:
            return now.execution_count - before.execution_count, inferences
        await asyncio.sleep(0.05)
