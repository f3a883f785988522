"""One request's batches to one model, a few at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.coalescing import EncodedAnswer, Tokenizing, infer_texts
from gateway.context import RequestContext
from gateway.triton_client import InferenceCalls

BATCHES_IN_FLIGHT = 4
"""Batches of one request sent to Triton at once.

A long text split into sentences makes dozens of batches; sent all at once, the last ones wait in
Triton's queue past its timeout (5 s for encoders) and a lone request is refused 429. A few at a time
still fill the model's batches, and no request queues its own work behind itself.
"""


async def infer_text_batches(
    context: RequestContext,
    triton: InferenceCalls,
    encoder: Tokenizing,
    batches: Sequence[Sequence[str]],
    outputs: Sequence[str],
    in_flight: int = BATCHES_IN_FLIGHT,
) -> list[EncodedAnswer]:
    """Each batch of texts tokenized by `encoder` (joined with other requests' texts when `triton`
    coalesces) and its answer, in order, with at most `in_flight` Triton calls open at once."""
    if len(batches) == 1:  # most requests: no semaphore, task or gather on the per-request path
        return [await infer_texts(triton, context, encoder.model, batches[0], encoder, outputs)]
    gate = asyncio.Semaphore(in_flight)

    async def infer(texts: Sequence[str]) -> EncodedAnswer:
        async with gate:
            return await infer_texts(triton, context, encoder.model, texts, encoder, outputs)

    return list(await asyncio.gather(*(infer(texts) for texts in batches)))
