"""Batch lines wait behind interactive requests in Triton's own queue: the gateway's client sends a
batch line (`RequestContext.background`) at priority 2, and the exported emotion model's dynamic
batcher (`priority_levels: 2`, `default_priority_level: 1`) serves level 1 first. Checked on the
session's real Triton with the real emotion model, under enough batch-line pressure that requests
queue."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from gateway.context import RequestContext
from gateway.triton_client import TritonClient
from samo.contracts.text import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from samo.triton.local_server import LocalTriton

LINES = 256
"""Batch lines sent at once: several of the model's batches (`max_batch_size` 64) deep."""
WIDTH = 128


def tokens(rng: random.Random) -> dict[str, np.ndarray]:
    ids = np.array([[101, *(rng.randrange(1000, 29000) for _ in range(WIDTH - 2)), 102]], dtype=np.int64)
    return {INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids), TOKEN_TYPE_IDS: np.zeros_like(ids)}


def test_an_interactive_request_overtakes_batch_lines_queued_before_it_in_triton(triton: LocalTriton) -> None:
    rng = random.Random(24)

    async def run() -> tuple[int, int]:
        client = TritonClient(triton.grpc_url, timeout_s=120)
        answered: list[str] = []

        async def send(context: RequestContext) -> None:
            await client.infer(context, "emotion", tokens(rng), ["logits"])
            answered.append(str(context.request_id))

        try:
            lines = [
                asyncio.create_task(send(RequestContext(request_id=f"line-{i}", background=True)))
                for i in range(LINES)
            ]
            while not answered:  # Triton is busy with the first lines: the rest wait in its queue
                await asyncio.sleep(0.005)
            waiting = LINES - len(answered)
            await send(RequestContext(request_id="interactive"))
            await asyncio.gather(*lines)
        finally:
            await client.close()
        return waiting, len(answered) - 1 - answered.index("interactive")

    waiting, after = asyncio.run(run())
    assert waiting >= LINES // 2, f"only {waiting} lines queued: no pressure, nothing to order"
    # First come, first served, it would answer after (nearly) every line that waited; served first,
    # only the batches running or formed when it arrived go before it.
    assert after >= waiting // 3, (waiting, after)
