"""Concurrent requests to one text encoder join one Triton call (gateway/coalescing.py), over a fake
Triton that checks the layout the encoder backend reads and scores each row from its own tokens."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pytest
from tokenizers import Tokenizer

from gateway.admission import Admission, Ticket
from gateway.coalescing import CoalescingCalls
from gateway.context import RequestContext
from gateway.deadlines import Deadline
from gateway.emotions.model import EmotionModel
from gateway.emotions.service import EmotionService
from gateway.errors import ErrorType, SamoError
from gateway.observability.metrics import gateway_registry
from gateway.results import EmotionOptions, EmotionResult, SummaryOptions
from gateway.services import encoder_batching
from gateway.summarization.service import EXTRACTIVE, Embedder, SummarizationService
from gateway.triton_client import BATCH_PRIORITY, priority_of
from samo.contracts.embedding import EMBEDDINGS, EmbeddingModelCard
from samo.contracts.emotion import EmotionModelCard
from samo.contracts.text import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from samo.text_encoding import NON_RAGGED_LENGTH_MULTIPLE, TokenEncoder
from tests.conftest import LABELS, TINY_MAX_LENGTH, journal_corpus, train_wordpiece

T = TypeVar("T")
PAD = 4
"""Not 0, so that rows padded with 0 (the mask's padding) instead of the card's pad id are seen."""
ROWS = 8
"""The cards' `max_batch_size`: small, so that requests split into several calls and calls fill up."""
WAIT_S = 10.0
"""Longest a test waits for anything: past it, something hangs."""


@dataclass
class Call:
    context: RequestContext
    model: str
    ids: np.ndarray
    mask: np.ndarray
    finished: bool = False
    cancelled: bool = False


@dataclass
class FakeTriton:
    """Triton serving ragged and non-ragged encoders, as far as the gateway can tell: each row's output
    depends only on its own unpadded tokens (and the model), so joined rows must equal rows sent alone."""

    ragged: dict[str, bool]
    dims: dict[str, int]
    calls: list[Call] = field(default_factory=list)
    hold: asyncio.Event | None = None
    """Calls wait for it (read when the call arrives)."""
    failure: SamoError | None = None
    """Raised by the calls that arrive while it is set."""

    async def infer(
        self, context: RequestContext, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        ids, mask = inputs[INPUT_IDS], inputs[ATTENTION_MASK]
        assert ids.shape == mask.shape == inputs[TOKEN_TYPE_IDS].shape and ids.ndim == 2
        lengths = mask.sum(axis=1)
        assert (mask == (np.arange(ids.shape[1]) < lengths[:, None])).all(), (
            "rows must be padded on the right"
        )
        assert (ids[mask == 0] == PAD).all(), "padding must be the card's pad id"
        assert (inputs[TOKEN_TYPE_IDS][mask == 0] == 0).all()
        if not self.ragged[model]:
            assert ids.shape[1] % NON_RAGGED_LENGTH_MULTIPLE == 0 or ids.shape[1] == TINY_MAX_LENGTH
        call = Call(context, model, ids, mask)
        self.calls.append(call)
        hold, failure = self.hold, self.failure
        try:
            if hold is not None:
                await hold.wait()
            await asyncio.sleep(0.001)  # the model's time: other requests arrive meanwhile
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        call.finished = True
        if failure is not None:
            raise failure
        salt = sum(map(ord, model))
        dims = self.dims[model]
        rows = np.empty((len(ids), dims), dtype=np.float32)
        for row, length in enumerate(lengths):
            tokens = ids[row, :length].astype(np.float64)
            weights = np.arange(1, length + 1) * 0.013 + salt * 0.001
            rows[row] = 3 * np.sin(np.arange(1, dims + 1) * (tokens @ weights) + length)
        if EMBEDDINGS in outputs:  # unit vectors, as the embedder's graph gives
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return {name: rows for name in outputs}

    def stream(self, *args: object) -> None:
        raise NotImplementedError


@functools.cache
def _tokenizer() -> Tokenizer:
    """Trained once: two trainings may tie-break differently and give other ids."""
    return train_wordpiece(journal_corpus())


def _encoder(*, ragged: bool) -> TokenEncoder:
    tokenizer = Tokenizer.from_str(_tokenizer().to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=TINY_MAX_LENGTH)
    return TokenEncoder(tokenizer, TINY_MAX_LENGTH, PAD, token_type_ids=True, ragged=ragged)


def _emotion_model(name: str, *, ragged: bool) -> EmotionModel:
    card = EmotionModelCard(
        kind="fine-tuned",
        source="test",
        labels=LABELS,
        activation="sigmoid",
        max_length=TINY_MAX_LENGTH,
        token_type_ids=True,
        pad_token_id=PAD,
        max_batch_size=ROWS,
        target="cpu" if ragged else "gpu",
    )
    thresholds = np.linspace(0.2, 0.8, len(LABELS)).astype(np.float32)
    return EmotionModel(name, "1", card, thresholds, _encoder(ragged=ragged))


def _embedder() -> Embedder:
    card = EmbeddingModelCard(
        source="test", dims=16, max_length=TINY_MAX_LENGTH, pad_token_id=PAD, max_batch_size=ROWS
    )
    return Embedder("coalesce_embedder", "1", card, _encoder(ragged=True))


@dataclass
class Stack:
    triton: FakeTriton
    emotions: EmotionService
    summarization: SummarizationService


def _stack(in_flight: int = 2) -> Stack:
    models = {
        "coalesce_a": _emotion_model("coalesce_a", ragged=True),
        "coalesce_b": _emotion_model("coalesce_b", ragged=False),
    }
    embedder = _embedder()
    triton = FakeTriton(
        ragged={"coalesce_a": True, "coalesce_b": False, embedder.name: True},
        dims={"coalesce_a": len(LABELS), "coalesce_b": len(LABELS), embedder.name: embedder.card.dims},
    )
    calls = CoalescingCalls(triton, encoder_batching(models, embedder), in_flight)  # type: ignore[arg-type]
    return Stack(
        triton,
        EmotionService(calls, models, "coalesce_a"),
        SummarizationService(calls, embedder, default=EXTRACTIVE),
    )


def _texts(rng: random.Random, count: int) -> list[str]:
    corpus = journal_corpus()
    return [" ".join(rng.sample(corpus, rng.randint(1, 3))) for _ in range(count)]


def _same(one: EmotionResult, other: EmotionResult) -> None:
    assert one.model == other.model and one.options == other.options
    assert len(one.results) == len(other.results)
    for a, b in zip(one.results, other.results, strict=True):
        assert [label.label for label in a.labels] == [label.label for label in b.labels]
        assert a.scores == pytest.approx(b.scores, abs=1e-6, rel=0)
        assert (a.tokens, a.truncated) == (b.tokens, b.truncated)


def _context(request_id: str, deadline_s: float | None = None) -> RequestContext:
    if deadline_s is None:
        return RequestContext(request_id=request_id)
    return RequestContext(request_id=request_id, ticket=Ticket(Admission(100), 1, 1, Deadline(deadline_s)))


def _call_texts(model: str) -> tuple[float, float]:
    """The metric of texts per Triton call: (calls, texts) so far."""
    registry = gateway_registry()
    count = registry.get_sample_value("samo_triton_call_texts_count", {"model": model}) or 0.0
    total = registry.get_sample_value("samo_triton_call_texts_sum", {"model": model}) or 0.0
    return count, total


async def _soon(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def _steps(count: int = 3) -> None:
    """Let every ready task run `count` times (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_500_mixed_concurrent_requests_get_the_answers_they_get_alone_in_fewer_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20)
    encoded: list[int] = []  # texts per tokenizer call
    encode = TokenEncoder.encode
    monkeypatch.setattr(
        TokenEncoder, "encode", lambda self, texts: encoded.append(len(texts)) or encode(self, texts)
    )
    requests = []
    for i in range(500):
        options = EmotionOptions(
            model=rng.choice(["coalesce_a", "coalesce_b"]),
            threshold=rng.choice([None, 0.3, 0.5, 0.7]),
            top_k=rng.choice([None, 1, 3]),
        )
        requests.append((f"r{i}", _texts(rng, rng.choice([1, 1, 1, 2, 3, 5, 12])), options))
    texts = sum(len(texts) for _, texts, _ in requests)

    async def run() -> tuple[list[EmotionResult], list[EmotionResult], Stack]:
        alone = _stack()
        expected = [await alone.emotions.detect(_context(i), t, o) for i, t, o in requests]
        assert len(alone.triton.calls) == sum(-(-len(t) // ROWS) for _, t, _ in requests)
        stack = _stack()
        encoded.clear()
        together = await _soon(
            asyncio.gather(*(stack.emotions.detect(_context(i), t, o) for i, t, o in requests))
        )
        return expected, list(together), stack

    before = {model: _call_texts(model) for model in ("coalesce_a", "coalesce_b")}
    expected, together, stack = asyncio.run(run())
    for one, other in zip(expected, together, strict=True):
        _same(one, other)
    calls = stack.triton.calls
    assert all(len(call.ids) <= ROWS for call in calls)
    assert sum(len(call.ids) for call in calls) == texts
    assert len(calls) < len(requests), f"{len(calls)} Triton calls for {len(requests)} requests"
    assert texts / len(calls) > ROWS / 2, f"{len(calls)} Triton calls for {texts} texts"
    # One tokenizer call per Triton call: the texts of a joined call are tokenized together.
    assert sorted(encoded) == sorted(len(call.ids) for call in calls)
    # The metric counts the same calls and texts (both stacks: alone, then together).
    after = {model: _call_texts(model) for model in ("coalesce_a", "coalesce_b")}
    assert sum(after[m][0] - before[m][0] for m in after) == len(calls) + sum(
        -(-len(t) // ROWS) for _, t, _ in requests
    )
    assert sum(after[m][1] - before[m][1] for m in after) == 2 * texts


def test_extractive_summaries_under_concurrency_equal_those_made_alone() -> None:
    rng = random.Random(7)
    entries = [[" ".join(_texts(rng, rng.randint(1, 3)))] for _ in range(60)]

    async def run() -> tuple[list, list, int, int]:
        alone = _stack()
        expected = [await alone.summarization.summarize(_context("a"), e, SummaryOptions()) for e in entries]
        stack = _stack()
        together = await _soon(
            asyncio.gather(*(stack.summarization.summarize(_context("t"), e) for e in entries))
        )
        return expected, list(together), len(alone.triton.calls), len(stack.triton.calls)

    expected, together, calls_alone, calls_together = asyncio.run(run())
    assert together == expected
    assert calls_together < calls_alone / 2


def test_a_lone_request_is_sent_at_once_alone_with_its_own_context() -> None:
    texts = _texts(random.Random(1), 3)

    async def run() -> None:
        stack = _stack()
        stack.triton.hold = asyncio.Event()
        calls, counted = _call_texts("coalesce_a")
        context = _context("only", deadline_s=30)
        task = asyncio.create_task(stack.emotions.detect(context, texts))
        await asyncio.sleep(0)  # one step of the event loop: no timer runs out
        assert len(stack.triton.calls) == 1
        call = stack.triton.calls[0]
        assert call.context is context and len(call.ids) == len(texts)
        stack.triton.hold.set()
        await _soon(task)
        for i in range(5):  # one after another: each alone
            await stack.emotions.detect(_context(f"next{i}"), texts[:1])
        assert [len(c.ids) for c in stack.triton.calls] == [3, 1, 1, 1, 1, 1]
        assert [c.context.request_id for c in stack.triton.calls[1:]] == [f"next{i}" for i in range(5)]
        assert _call_texts("coalesce_a") == (calls + 6, counted + 8)

    asyncio.run(run())


def test_a_bad_request_among_good_ones_fails_alone() -> None:
    rng = random.Random(2)
    good = [_texts(rng, 2) for _ in range(20)]

    async def run() -> None:
        alone = _stack()
        expected = [await alone.emotions.detect(_context("a"), t) for t in good]
        stack = _stack(in_flight=1)
        bad = stack.emotions.detect(_context("bad"), ["text"], EmotionOptions(model="missing"))
        answers = await _soon(
            asyncio.gather(
                *(stack.emotions.detect(_context(f"g{i}"), t) for i, t in enumerate(good[:10])),
                bad,
                *(stack.emotions.detect(_context(f"g{i}"), t) for i, t in enumerate(good[10:])),
                return_exceptions=True,
            )
        )
        error = answers.pop(10)
        assert isinstance(error, SamoError) and error.type is ErrorType.NOT_FOUND
        for one, other in zip(expected, answers, strict=True):
            assert isinstance(other, EmotionResult)
            _same(one, other)

    asyncio.run(run())


async def _busy(stack: Stack, texts: list[str]) -> tuple[asyncio.Task[EmotionResult], asyncio.Event]:
    """A request whose call is open and held (with `in_flight` 1, what comes next waits), and the event
    that releases its call."""
    hold = stack.triton.hold = asyncio.Event()
    task = asyncio.create_task(stack.emotions.detect(_context("busy"), texts))
    await _steps()
    assert len(stack.triton.calls) == 1
    return task, hold


async def _alone_answers(texts: dict[str, list[str]]) -> dict[str, EmotionResult]:
    """Each named request's answer on a stack of its own, sent one at a time."""
    alone = _stack()
    return {name: await alone.emotions.detect(_context(name), t) for name, t in texts.items()}


def test_a_request_cancelled_while_waiting_leaves_its_neighbours_intact() -> None:
    rng = random.Random(3)
    texts = {name: _texts(rng, 2) for name in ("busy", "a", "b", "c")}

    async def run() -> None:
        expected = await _alone_answers(texts)
        stack = _stack(in_flight=1)
        busy, first_hold = await _busy(stack, texts["busy"])
        waiting = {n: asyncio.create_task(stack.emotions.detect(_context(n), texts[n])) for n in "abc"}
        await _steps()
        waiting["b"].cancel()
        await _steps()
        stack.triton.hold = None
        first_hold.set()
        _same(expected["busy"], await _soon(busy))
        _same(expected["a"], await _soon(waiting["a"]))
        _same(expected["c"], await _soon(waiting["c"]))
        assert waiting["b"].cancelled()
        joined = stack.triton.calls[1]
        assert joined.context.request_id == "a" and len(joined.ids) == 4  # b's rows were not sent
        assert len(stack.triton.calls) == 2

    asyncio.run(run())


def test_a_request_cancelled_after_its_call_was_sent_leaves_the_call_to_its_neighbours() -> None:
    rng = random.Random(4)
    texts = {name: _texts(rng, 1) for name in ("busy", "a", "b", "c")}

    async def run() -> None:
        expected = await _alone_answers(texts)
        stack = _stack(in_flight=1)
        busy, first_hold = await _busy(stack, texts["busy"])
        waiting = {n: asyncio.create_task(stack.emotions.detect(_context(n), texts[n])) for n in "abc"}
        await _steps()
        second_hold = stack.triton.hold = asyncio.Event()
        first_hold.set()
        await _soon(busy)
        await _steps()
        joined = stack.triton.calls[1]
        assert len(joined.ids) == 3
        waiting["b"].cancel()
        await _steps()
        second_hold.set()
        _same(expected["a"], await _soon(waiting["a"]))
        _same(expected["c"], await _soon(waiting["c"]))
        assert waiting["b"].cancelled() and joined.finished and not joined.cancelled

    asyncio.run(run())


def test_a_call_whose_requests_all_left_is_cancelled_and_the_next_request_is_served() -> None:
    texts = _texts(random.Random(5), 4)

    async def run() -> None:
        stack = _stack(in_flight=1)
        busy, first_hold = await _busy(stack, texts[:1])
        waiting = [
            asyncio.create_task(stack.emotions.detect(_context(f"w{i}"), [t]))
            for i, t in enumerate(texts[1:])
        ]
        await _steps()
        stack.triton.hold = asyncio.Event()
        first_hold.set()
        await _soon(busy)
        await _steps()
        joined = stack.triton.calls[1]
        for task in waiting:
            task.cancel()
        await _steps()
        assert joined.cancelled
        stack.triton.hold = None
        result = await _soon(stack.emotions.detect(_context("after"), texts[:2]))
        assert len(result.results) == 2 and stack.triton.calls[-1].context.request_id == "after"

    asyncio.run(run())


def test_a_request_past_its_deadline_fails_alone_while_waiting_or_once_sent() -> None:
    rng = random.Random(6)
    texts = {name: _texts(rng, 1) for name in ("busy", "late", "y", "sent_late", "z")}

    async def run() -> None:
        expected = await _alone_answers(texts)
        stack = _stack(in_flight=1)
        busy, first_hold = await _busy(stack, texts["busy"])
        late = asyncio.create_task(stack.emotions.detect(_context("late", 0.05), texts["late"]))
        y = asyncio.create_task(stack.emotions.detect(_context("y", 30), texts["y"]))
        with pytest.raises(SamoError) as waited_too_long:
            await _soon(late)
        assert waited_too_long.value.type is ErrorType.DEADLINE_EXCEEDED
        # Sent together with z, then past its deadline: it leaves, z's call goes on.
        sent_late_context, z_context = _context("sent_late", 0.2), _context("z", 40)
        sent_late = asyncio.create_task(stack.emotions.detect(sent_late_context, texts["sent_late"]))
        z = asyncio.create_task(stack.emotions.detect(z_context, texts["z"]))
        await _steps()
        second_hold = stack.triton.hold = asyncio.Event()
        first_hold.set()
        _same(expected["busy"], await _soon(busy))
        await _steps()
        joined = stack.triton.calls[1]
        assert len(joined.ids) == 3  # y, sent_late and z; late's row was dropped
        assert joined.context.request_id == "y"
        assert joined.context.deadline is z_context.deadline  # the latest of the three
        with pytest.raises(SamoError) as past_deadline:
            await _soon(sent_late)
        assert past_deadline.value.type is ErrorType.DEADLINE_EXCEEDED
        assert not joined.cancelled
        second_hold.set()
        _same(expected["y"], await _soon(y))
        _same(expected["z"], await _soon(z))

    asyncio.run(run())


def test_a_failed_call_fails_each_of_its_requests_with_its_error_and_nothing_hangs() -> None:
    texts = _texts(random.Random(8), 4)

    async def run() -> None:
        stack = _stack(in_flight=1)
        busy, first_hold = await _busy(stack, texts[:1])
        waiting = [
            asyncio.create_task(stack.emotions.detect(_context(f"w{i}"), [t]))
            for i, t in enumerate(texts[1:])
        ]
        await _steps()
        failure = SamoError(ErrorType.UNAVAILABLE, "the inference server is unavailable; retry shortly")
        stack.triton.hold, stack.triton.failure = None, failure
        first_hold.set()
        await _soon(busy)  # its call arrived before the failure
        errors = await _soon(asyncio.gather(*waiting, return_exceptions=True))
        assert all(error is failure for error in errors)
        assert len(stack.triton.calls) == 2 and len(stack.triton.calls[1].ids) == 3
        stack.triton.failure = None
        result = await _soon(stack.emotions.detect(_context("after"), texts))
        assert len(result.results) == 4

    asyncio.run(run())


def test_health_probes_reach_the_model_alone_even_while_it_is_busy() -> None:
    async def run() -> None:
        stack = _stack(in_flight=1)
        busy, hold = await _busy(stack, _texts(random.Random(9), 2))
        stack.triton.hold = None
        probe = RequestContext.for_probe()
        counted = _call_texts("coalesce_a")
        result = await _soon(stack.emotions.detect(probe, ["Readiness check 1. The model answers."]))
        assert len(result.results) == 1
        assert stack.triton.calls[1].context is probe and len(stack.triton.calls[1].ids) == 1
        assert _call_texts("coalesce_a") == counted  # a probe is not traffic
        hold.set()
        await _soon(busy)

    asyncio.run(run())


def test_in_flight_0_joins_nothing() -> None:
    rng = random.Random(10)
    requests = [_texts(rng, 1) for _ in range(30)]

    async def run() -> int:
        stack = _stack(in_flight=0)
        await _soon(
            asyncio.gather(*(stack.emotions.detect(_context(f"r{i}"), t) for i, t in enumerate(requests)))
        )
        return len(stack.triton.calls)

    assert asyncio.run(run()) == len(requests)


def test_a_joined_call_has_no_deadline_of_its_own_when_one_of_its_requests_has_none() -> None:
    texts = _texts(random.Random(11), 3)

    async def run() -> None:
        stack = _stack(in_flight=1)
        busy, hold = await _busy(stack, texts[:1])
        stack.triton.hold = None
        waiting = [
            asyncio.create_task(stack.emotions.detect(_context("with", 30), texts[1:2])),
            asyncio.create_task(stack.emotions.detect(_context("without"), texts[2:])),
        ]
        await _steps()
        hold.set()
        await _soon(asyncio.gather(busy, *waiting))
        joined = stack.triton.calls[1]
        assert joined.context.request_id == "with" and joined.context.deadline is None
        assert not joined.context.probe and len(joined.ids) == 2

    asyncio.run(run())


def test_batch_lines_use_spare_capacity_and_go_to_triton_at_the_batch_priority() -> None:
    """Batch lines open at most `in_flight - 1` calls, an interactive request never waits behind batch
    lines queued before it nor joins their call, and a joined call of batch lines keeps their priority."""
    rng = random.Random(12)

    def line(name: str) -> RequestContext:
        return RequestContext(request_id=name, background=True)

    async def run() -> None:
        stack = _stack(in_flight=2)
        hold = stack.triton.hold = asyncio.Event()
        detect = stack.emotions.detect
        lines = [asyncio.create_task(detect(line(f"b{i}"), _texts(rng, 1))) for i in range(5)]
        await _steps()
        assert [c.context.request_id for c in stack.triton.calls] == ["b0"]  # one call kept free
        first = asyncio.create_task(detect(_context("i0"), _texts(rng, 2)))
        await _steps()
        assert [c.context.request_id for c in stack.triton.calls] == ["b0", "i0"]  # not behind b1..b4
        later = [asyncio.create_task(detect(_context(f"i{i}"), _texts(rng, 2))) for i in (1, 2)]
        await _steps()
        hold.set()
        await _soon(asyncio.gather(first, *lines, *later))
        sent = [(c.context.request_id, priority_of(c.context), len(c.ids)) for c in stack.triton.calls]
        assert sent == [
            ("b0", BATCH_PRIORITY, 1),
            ("i0", 0, 2),
            ("i1", 0, 4),  # i1 and i2 joined, before the lines that waited longer
            ("b1", BATCH_PRIORITY, 4),  # b1 to b4 joined, still at the batch priority
        ]

    asyncio.run(run())
