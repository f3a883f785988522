"""Concurrent requests to one text encoder joined into one Triton call, with no timer.

What text-embeddings-inference's queue does (`core/src/queue.rs`): a request's rows wait only while the
model is busy. Each encoder model (the emotion classifiers, the embedder behind extractive summaries)
gets one `Coalescer`. A call whose model has fewer than `in_flight` calls open goes to Triton at once,
alone, from the request's own coroutine (at concurrency 1 nothing changes: no task, no future, no
copy). Once `in_flight` calls are open, requests wait in a queue; when a call ends, one task takes
everything waiting, in arrival order, up to the card's `max_batch_size` rows, pads the rows to the
longest one, sends them as one Triton request and hands each request its own rows back.

Texts join before tokenization (`infer_texts`, what the emotion service and the embedder send): a
request sent alone is tokenized in its own coroutine; requests that wait are tokenized together, one
`encode_batch` call for the whole Triton call, and each gets its own truncation flags and token counts
back with its rows. Calls that bring token arrays (`infer`) are joined as arrays, padded to the
longest row.

Batch lines (`context.background`) use spare capacity only: they wait in a queue of their own, and a
call takes them only when no interactive request waits, so a call is all interactive or all batch
lines (sent to Triton at the batch priority, gateway.triton_client.priority_of); and they open at most
`in_flight - 1` calls (when `in_flight` > 1), so one call is always free for an interactive request.

What a request that leaves does to its neighbours: nothing.
- Validation happens before the service call: an invalid request never reaches the queue.
- Cancelled by its client, or past its deadline while waiting: its rows are dropped from the queue;
  once sent, its rows are computed and thrown away. A call whose requests have all left is cancelled.
- Each request waits for its rows until its own deadline (DEADLINE_EXCEEDED, as a lone call that
  Triton does not answer in time). The joined call itself runs until the latest deadline among its
  requests (none when any of them has none: then the client's `triton_timeout_s`), so a request
  with a short deadline never cuts its neighbours' call short.
- A failed call (Triton's error, a dead model) fails every request in it with the same error.

The joined call carries the first request's ID to Triton (one ID per call); the others' IDs are logged
at DEBUG with it. Health probes (`context.probe`) are never joined: they must reach the model alone to
prove it answers.

Joining pads shorter rows to the call's longest row. For the ragged Python-backend models (CPU,
`gpu-torch`) that costs nothing: the model strips padding per row. For NVIDIA's ONNX Runtime backend
(`gpu`, not ragged) every row is computed at the call's width, which is what Triton's own batcher
does once shapes are equal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.context import RequestContext
from gateway.deadlines import EXPIRED_MESSAGE
from gateway.errors import ErrorType, SamoError
from gateway.observability.metrics import record_call_texts
from gateway.observability.tracing import stage
from gateway.triton_client import InferenceCalls
from samo.text_encoding import EncodedTexts, TokenEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderBatching:
    """How one encoder model's rows may be joined."""

    max_rows: int
    """Rows in one Triton call: the card's `max_batch_size`."""
    pad_values: Mapping[str, int] = field(default_factory=dict)
    """The value that pads each input's rows (token ids: the card's `pad_token_id`); 0 for others."""


@dataclass(frozen=True)
class Tokenizing:
    """A model's tokenizer, and the tracing stage its tokenization is recorded as (`emotions.tokenize`)."""

    encoder: TokenEncoder
    stage: str
    model: str

    def encode(self, texts: Sequence[str]) -> EncodedTexts:
        with stage(self.stage, model=self.model, texts=len(texts)):
            return self.encoder.encode(texts)


@dataclass(frozen=True)
class EncodedAnswer:
    """A request's rows of a call's outputs, and its texts' tokenization (inputs: its own rows)."""

    outputs: dict[str, np.ndarray]
    encoded: EncodedTexts


@dataclass(eq=False)
class _Waiting:
    """One request's rows, waiting for a call: token arrays (`inputs`), or texts and their encoder."""

    context: RequestContext
    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[str]
    rows: int
    width: int
    future: asyncio.Future[Any]
    """Resolves to the request's rows of the outputs; for texts, an `EncodedAnswer`."""
    texts: Sequence[str] = ()
    encoder: Tokenizing | None = None
    call: _Call | None = None

    @property
    def background(self) -> bool:
        return self.context.background

    def joins(self, first: _Waiting) -> bool:
        """May go in one call with `first`: texts for the same tokenizer, or arrays of the same inputs."""
        if self.encoder is not None or first.encoder is not None:
            return self.encoder is first.encoder
        return self.inputs.keys() == first.inputs.keys()


@dataclass(eq=False)
class _Call:
    requests: list[_Waiting]
    task: asyncio.Task[None] | None = None


def _token_rows(inputs: Mapping[str, np.ndarray]) -> tuple[int, int] | None:
    """(rows, width) when every input is one [rows, width] array of the same shape, else None."""
    shapes = {array.shape for array in inputs.values()}
    if len(shapes) != 1 or len(shape := next(iter(shapes))) != 2:
        return None
    return shape[0], shape[1]


class Coalescer:
    """One encoder model's calls: sent at once while fewer than `in_flight` are open, joined after."""

    def __init__(self, triton: InferenceCalls, model: str, batching: EncoderBatching, in_flight: int) -> None:
        if in_flight < 1:
            raise ValueError(f"`in_flight` must be at least 1, got {in_flight}")
        self.triton = triton
        self.model = model
        self.batching = batching
        self.in_flight = in_flight
        self._waiting: deque[_Waiting] = deque()
        """Interactive requests waiting for a call."""
        self._background: deque[_Waiting] = deque()
        """Batch lines waiting for a call: taken only when no interactive request waits."""
        self._background_calls = max(1, in_flight - 1)
        """Calls that batch lines may open: one is kept for interactive requests."""
        self._open = 0
        """Calls open: sent alone, or a task started (which may not have taken its rows yet)."""
        self._starting = False
        """A call's task was started and has not yet taken what waits: new rows will go with it."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def infer(
        self, context: RequestContext, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        shape = _token_rows(inputs)
        if shape is None or self._sends_at_once(context):
            return await self._alone(context, inputs, outputs, shape[0] if shape else 0)
        future = asyncio.get_running_loop().create_future()
        return await self._queued(_Waiting(context, inputs, outputs, shape[0], shape[1], future))

    async def infer_texts(
        self, context: RequestContext, texts: Sequence[str], encoder: Tokenizing, outputs: Sequence[str]
    ) -> EncodedAnswer:
        """`texts` tokenized by `encoder` and sent: alone and at once below the limit, else joined with
        what waits (one tokenizer call and one Triton call for all of it)."""
        if self._sends_at_once(context):
            encoded = encoder.encode(texts)
            return EncodedAnswer(await self._alone(context, encoded.inputs, outputs, len(texts)), encoded)
        future = asyncio.get_running_loop().create_future()
        return await self._queued(_Waiting(context, {}, outputs, len(texts), 0, future, texts, encoder))

    def _limit(self, background: bool) -> int:
        return self._background_calls if background else self.in_flight

    def _sends_at_once(self, context: RequestContext) -> bool:
        """Below its limit with nothing of its rank or above waiting: an interactive request does not
        wait behind batch lines."""
        ahead = self._waiting or (context.background and self._background)
        return self._open < self._limit(context.background) and not ahead and not self._starting

    async def _queued(self, request: _Waiting) -> Any:
        deadline = request.context.deadline
        timeout = None if deadline is None else deadline.remaining()  # raises once it has passed
        loop = asyncio.get_running_loop()
        future = request.future
        (self._background if request.background else self._waiting).append(request)
        self._start()
        # A timer, not `asyncio.wait_for`: that starts a task per waiting request, on the path that
        # limits a gateway's throughput.
        timer = None if timeout is None else loop.call_later(timeout, self._expire, request)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            if future.cancelled():  # its client went away
                self._left(request)

    def _expire(self, request: _Waiting) -> None:
        """The request's deadline passed before its rows came back: it fails alone."""
        if not request.future.done():
            request.future.set_exception(
                SamoError(ErrorType.DEADLINE_EXCEEDED, f"model `{self.model}` did not answer in time")
            )
            self._left(request)

    async def _alone(
        self, context: RequestContext, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], rows: int
    ) -> dict[str, np.ndarray]:
        """One request's call, from its own coroutine: its client's cancellation cancels it."""
        self._open += 1
        try:
            record_call_texts(self.model, rows)
            return await self.triton.infer(context, self.model, inputs, outputs)
        finally:
            self._open -= 1
            self._start()

    def _start(self) -> None:
        """A call for what waits, if a call may open and none is about to take it."""
        if self._starting or not (self._waiting or self._background):
            return
        if self._open >= self._limit(background=not self._waiting):
            return
        self._starting = True
        self._open += 1
        task = asyncio.get_running_loop().create_task(self._joined())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _joined(self) -> None:
        call: _Call | None = None
        try:
            self._starting = False
            call = _Call(self._take())
            call.task = asyncio.current_task()
            for request in call.requests:
                request.call = call
            self._start()  # more waits than one call takes, and another may open
            if call.requests:
                await self._send(call.requests)
        finally:
            for request in call.requests if call is not None else ():
                if not request.future.done():  # the task was cancelled
                    request.future.cancel()
            self._open -= 1
            self._start()

    def _take(self) -> list[_Waiting]:
        """What waits, in arrival order, up to the card's rows; requests that left are dropped.
        Interactive requests when any wait, else batch lines (never both in one call)."""
        taken = self._take_from(self._waiting)
        if taken or self._open > self._background_calls:  # this call holds the interactive slot
            return taken
        return self._take_from(self._background)

    def _take_from(self, waiting: deque[_Waiting]) -> list[_Waiting]:
        taken: list[_Waiting] = []
        rows = 0
        while waiting:
            request = waiting[0]
            if request.future.done():
                waiting.popleft()
                continue
            deadline = request.context.deadline
            if deadline is not None and deadline.left() <= 0:
                waiting.popleft()
                request.future.set_exception(SamoError(ErrorType.DEADLINE_EXCEEDED, EXPIRED_MESSAGE))
                continue
            if taken and (rows + request.rows > self.batching.max_rows or not request.joins(taken[0])):
                break
            waiting.popleft()
            taken.append(request)
            rows += request.rows
        return taken

    async def _send(self, requests: list[_Waiting]) -> None:
        outputs = list(dict.fromkeys(name for request in requests for name in request.outputs))
        rows = sum(request.rows for request in requests)
        context = _call_context(requests)
        if len(requests) > 1 and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "one call to %s (%d rows) as request %s, also carrying requests %s",
                self.model,
                rows,
                context.request_id,
                ", ".join(str(request.context.request_id) for request in requests[1:]),
            )
        record_call_texts(self.model, rows)
        try:
            encoder = requests[0].encoder
            encoded = None
            if encoder is not None:  # one tokenizer call for every text of the call
                encoded = encoder.encode([text for request in requests for text in request.texts])
                inputs = encoded.inputs
            elif len(requests) == 1:
                inputs = requests[0].inputs
            else:
                inputs = self._joined_inputs(requests, rows)
            answer = await self.triton.infer(context, self.model, inputs, outputs)
            parts: list[Any] = _split(answer, requests, rows, self.model)
            if encoded is not None:
                parts = [
                    EncodedAnswer(part, _rows_of(encoded, start, request.rows))
                    for part, request, start in zip(parts, requests, _offsets(requests), strict=True)
                ]
        except Exception as exc:  # not handled here: every request raises it, as a lone call would
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, part in zip(requests, parts, strict=True):
            if not request.future.done():
                request.future.set_result(part)

    def _joined_inputs(self, requests: list[_Waiting], rows: int) -> dict[str, np.ndarray]:
        """Every request's rows in order, each input padded to the longest row."""
        width = max(request.width for request in requests)
        joined = {}
        for name, first in requests[0].inputs.items():
            array = np.full((rows, width), self.batching.pad_values.get(name, 0), dtype=first.dtype)
            offset = 0
            for request in requests:
                part = request.inputs[name]
                array[offset : offset + request.rows, : request.width] = part
                offset += request.rows
            joined[name] = array
        return joined

    def _left(self, request: _Waiting) -> None:
        """A request cancelled by its client or its deadline: a sent call nobody waits for is cancelled."""
        call = request.call
        if (
            call is not None
            and call.task is not None
            and not call.task.done()
            and all(other.future.done() for other in call.requests)
        ):
            call.task.cancel()


def _call_context(requests: list[_Waiting]) -> RequestContext:
    """The joined call's context: the first request's ID, the latest deadline (none if any has none),
    batch priority when every request is a batch line (calls are never mixed)."""
    first = requests[0].context
    if len(requests) == 1:
        return first
    tickets = [request.context.ticket for request in requests]
    latest = None
    if all(ticket is not None for ticket in tickets):
        latest = max((t for t in tickets if t is not None), key=lambda ticket: ticket.deadline.at)
    background = all(request.background for request in requests)
    return RequestContext(request_id=first.request_id, ticket=latest, background=background)


def _offsets(requests: list[_Waiting]) -> list[int]:
    """Each request's first row in the call."""
    starts, row = [], 0
    for request in requests:
        starts.append(row)
        row += request.rows
    return starts


def _rows_of(encoded: EncodedTexts, start: int, rows: int) -> EncodedTexts:
    stop = start + rows
    return EncodedTexts(
        inputs={name: array[start:stop] for name, array in encoded.inputs.items()},
        truncated=encoded.truncated[start:stop],
        token_counts=encoded.token_counts[start:stop],
    )


def _split(
    answer: dict[str, np.ndarray], requests: list[_Waiting], rows: int, model: str
) -> list[dict[str, np.ndarray]]:
    """Each request's rows of the call's outputs, in the order the requests were joined."""
    if len(requests) == 1:
        return [answer]
    for name, array in answer.items():
        if array.shape[:1] != (rows,):
            raise SamoError(
                ErrorType.INTERNAL,
                f"model `{model}` returned `{name}` of shape {array.shape} for {rows} texts",
            )
    parts = []
    offset = 0
    for request in requests:
        stop = offset + request.rows
        parts.append({name: answer[name][offset:stop] for name in request.outputs})
        offset = stop
    return parts


class CoalescingCalls:
    """`InferenceCalls` that join concurrent calls to the given encoder models (one `Coalescer` each)
    and send every other call, and every health probe, straight to `triton`.

    `in_flight` 0 joins nothing: every call goes straight to Triton (texts per call are still counted).
    Texts per call are counted for requests' calls only, not for health probes.
    """

    def __init__(
        self, triton: InferenceCalls, encoders: Mapping[str, EncoderBatching], in_flight: int
    ) -> None:
        self.triton = triton
        self.encoders = dict(encoders)
        self.coalescers = (
            {model: Coalescer(triton, model, batching, in_flight) for model, batching in encoders.items()}
            if in_flight > 0
            else {}
        )

    async def infer(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]:
        coalescer = self.coalescers.get(model)
        if coalescer is not None and not context.probe:
            return await coalescer.infer(context, inputs, outputs)
        if model in self.encoders and not context.probe:
            shape = _token_rows(inputs)
            record_call_texts(model, shape[0] if shape else 0)
        return await self.triton.infer(context, model, inputs, outputs)

    def stream(
        self,
        context: RequestContext,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> AsyncIterator[dict[str, np.ndarray]]:
        return self.triton.stream(context, model, inputs, outputs)


async def infer_texts(
    calls: InferenceCalls,
    context: RequestContext,
    model: str,
    texts: Sequence[str],
    encoder: Tokenizing,
    outputs: Sequence[str],
) -> EncodedAnswer:
    """Texts to an encoder model through `calls`: joined before tokenization when `calls` coalesces
    (health probes never are), else tokenized here and sent as they are."""
    coalescer = calls.coalescers.get(model) if isinstance(calls, CoalescingCalls) else None
    if coalescer is not None and not context.probe:
        return await coalescer.infer_texts(context, texts, encoder, outputs)
    encoded = encoder.encode(texts)
    return EncodedAnswer(await calls.infer(context, model, encoded.inputs, outputs), encoded)
