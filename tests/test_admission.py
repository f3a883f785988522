"""Admission by cost, deadlines and overload: the controller alone, then a real gateway over a real Triton
(streams holding their units, gRPC call and message limits, a model's queue policy turning work away)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.summarizer.export import SummarizerExportOptions, export_summarizer
from gateway.admission import Admission, WorkCosts
from gateway.context import RequestContext
from gateway.deadlines import Deadline
from gateway.errors import ErrorType, SamoError
from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.http.sse import event_response
from gateway.operations import OperationStream
from gateway.operations.costs import OperationCosts
from gateway.results import SummaryOptions
from gateway.summarization.abstractive import AbstractiveModel
from gateway.summarization.service import SummarizationService
from load_tests.processes import wait_http_ok
from samo.contracts.summarizer import GenerationDefaults, SummarizerModelCard
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from samo.triton.model_config import read_model_config, write_model_config
from tests.conftest import gateway_settings, journal_corpus, running_gateway

# --- the controller -------------------------------------------------------------------------------


def overloaded(call) -> SamoError:
    with pytest.raises(SamoError) as error:
        call()
    assert error.value.type is ErrorType.OVERLOADED
    return error.value


def test_units_are_counted_against_the_budget_and_given_back() -> None:
    admission = Admission(100)
    first = admission.admit(60)
    second = admission.admit(40)
    assert admission.in_use == 100
    error = overloaded(lambda: admission.admit(1))
    assert "100 of 100 units in progress; this request needs 1" in error.message
    first.release()
    first.release()  # idempotent
    assert admission.in_use == 40
    admission.admit(60).release()
    second.release()
    assert admission.in_use == 0


def test_a_request_larger_than_the_budget_runs_alone() -> None:
    admission = Admission(100)
    small = admission.admit(1)
    overloaded(lambda: admission.admit(5000))
    small.release()
    huge = admission.admit(5000)
    assert huge.units == 100 and admission.in_use == 100
    overloaded(lambda: admission.admit(1))
    huge.release()
    assert admission.in_use == 0


def test_units_are_released_when_the_request_fails_or_is_cancelled() -> None:
    admission = Admission(10)
    with pytest.raises(RuntimeError), admission.admit(7):
        raise RuntimeError("the model failed")
    assert admission.in_use == 0

    async def cancelled() -> None:
        with admission.admit(7):
            await asyncio.sleep(60)

    async def run() -> None:
        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0)
        assert admission.in_use == 7
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert admission.in_use == 0


def test_audio_is_admitted_at_one_window_and_charged_its_duration_later() -> None:
    costs = WorkCosts(units_per_audio_s=10.0, base_deadline_s=5.0, deadline_s_per_unit=0.01)
    admission = Admission(1000, costs)
    assert costs.audio(0) == costs.audio(12.0) == 300  # a 30 s window, the least Whisper decodes
    with admission.admit(costs.audio(0)) as ticket:
        context = RequestContext(ticket=ticket)
        before = ticket.deadline.at
        context.hold_audio(60.0)  # what a transcription does once it has read the duration
        assert admission.in_use == 600 and ticket.units == 600
        assert ticket.deadline.at == pytest.approx(before + 300 * 0.01)
        # More than the budget takes beside another request: refused, and what was held stays held.
        other = admission.admit(100)
        overloaded(lambda: context.hold_audio(200.0))
        assert admission.in_use == 700
        other.release()
    assert admission.in_use == 0
    context.hold_audio(60.0)  # the request is over: nothing more to hold
    RequestContext().hold_audio(60.0)  # a request never admitted (a direct service call): nothing
    assert admission.in_use == 0


def test_a_stream_takes_the_units_over_from_its_route() -> None:
    admission = Admission(10)
    with admission.admit(6) as ticket:
        stream = ticket.hand_over()
    assert admission.in_use == 6  # the route ended, the stream has not
    stream.release()
    assert admission.in_use == 0


def test_summaries_cost_their_tokens_and_beams() -> None:
    work = WorkCosts(units_per_token=2.0)
    extractive = SummarizationService(triton=None, embedder=None)  # type: ignore[arg-type]
    assert OperationCosts(work, extractive).summaries(3, SummaryOptions()) == 3  # one embedder pass per text
    card = SummarizerModelCard(
        architecture="t5", source="tests", max_input_tokens=512, decoder_start_token_id=0,
        eos_token_ids=(1,), pad_token_id=0, defaults=GenerationDefaults(max_new_tokens=50, num_beams=4),
    )  # fmt: skip
    model = AbstractiveModel("t5", "1", card, tokenizer=None)  # type: ignore[arg-type]
    abstractive = SummarizationService(triton=None, embedder=None, abstractive={"t5": model})  # type: ignore[arg-type]
    costs = OperationCosts(work, abstractive)
    assert costs.summaries(3, SummaryOptions()) == 3 * 50 * 4 * 2  # the model's defaults
    assert costs.summaries(1, SummaryOptions(max_new_tokens=10, num_beams=2)) == 10 * 2 * 2
    assert costs.summaries(1, SummaryOptions(model="extractive")) == 1


def test_the_deadline_follows_the_work_and_refuses_work_after_it() -> None:
    costs = WorkCosts(base_deadline_s=10.0, deadline_s_per_unit=0.5)
    admission = Admission(1000, costs)
    assert RequestContext().time_left(7.0) == 7.0  # never admitted: no deadline of its own
    with admission.admit(20) as ticket:
        assert 19.0 < RequestContext(ticket=ticket).time_left(7.0) <= 20.0
        ticket.deadline = Deadline(-1.0)
        with pytest.raises(SamoError) as error:
            RequestContext(ticket=ticket).time_left(7.0)
    assert error.value.type is ErrorType.DEADLINE_EXCEEDED


def _asgi_stream(admission: Admission, gate: asyncio.Event):
    async def rest():
        await gate.wait()
        yield b"last"  # the type that ends the stream

    stream = OperationStream("first", rest(), admission.admit(5))
    return event_response(stream, lambda item: ("item", {"value": str(item)}), bytes)


@pytest.mark.parametrize("client_leaves", [False, True])
def test_an_event_stream_holds_its_units_until_it_ends_or_the_client_leaves(client_leaves: bool) -> None:
    admission = Admission(5)

    async def run() -> list[bytes]:
        gate = asyncio.Event()
        response = _asgi_stream(admission, gate)
        assert admission.in_use == 5
        sent: list[bytes] = []
        disconnect = asyncio.Event()

        async def receive():
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"])
                assert admission.in_use == 5  # held while events flow
                (disconnect if client_leaves else gate).set()

        scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
        await asyncio.wait_for(response(scope, receive, send), timeout=10)
        return sent

    sent = asyncio.run(run())
    assert admission.in_use == 0
    assert len(sent) == (1 if client_leaves else 2)


# --- a real gateway over a real Triton ---------------------------------------------------------------

STREAM_TOKENS = 1024


@pytest.fixture(scope="module")
def small_repository(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, tiny_t5: Path) -> Path:
    """The tiny BERT as `emotion` and the tiny T5 (with its streaming variant) as the summarizer."""
    repository = tmp_path_factory.mktemp("admission-repository")
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name="emotion", repository=repository))
    export_summarizer(SummarizerExportOptions(model=str(tiny_t5), name="tiny_t5", repository=repository))
    _add_slow_copy(repository / "emotion", SLOW_EMOTION)
    return repository


SLOW_EMOTION = "slow_emotion"
SLOW_EXECUTION_S = 5.0
"""Long enough that the refusals come back well before it ends with the other test worker busy beside
(at 2 s, two of the four came back in time in a two-worker run)."""
QUEUE_TIMEOUT_US = 300_000


def _add_slow_copy(model_dir: Path, name: str) -> None:
    """The emotion model again, each execution `SLOW_EXECUTION_S` longer, with a queue of one request
    that times out after `QUEUE_TIMEOUT_US`: a busy model whose queue fills, without timing luck."""
    slow = model_dir.parent / name
    shutil.copytree(model_dir, slow)
    config = read_model_config(slow)
    config.name = name
    config.dynamic_batching.default_queue_policy.max_queue_size = 1
    config.dynamic_batching.default_queue_policy.default_timeout_microseconds = QUEUE_TIMEOUT_US
    write_model_config(slow, config)
    code = slow / "1" / "model.py"
    code.write_text(
        code.read_text()
        + f"""

import time as _time

_execute = TritonPythonModel.execute


def _slow_execute(self, requests):
    _time.sleep({SLOW_EXECUTION_S})
    return _execute(self, requests)


TritonPythonModel.execute = _slow_execute
"""
    )


@pytest.fixture(scope="module")
def small_triton(small_repository: Path, local_triton) -> Iterator[LocalTriton]:
    with local_triton(small_repository) as server:
        yield server


def settings_for(triton: LocalTriton, repository: Path, **overrides) -> GatewaySettings:
    # No probe inference in the middle of a test.
    return gateway_settings(triton, model_repository=repository, health_probe_interval_s=3600.0, **overrides)


def _stub_pid(triton: LocalTriton, model: str) -> int:
    """The Python-backend stub process running `model`'s first instance."""
    assert triton.pid is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(entry.name)) != triton.pid:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            if f"{model}_0_0".encode() in arguments:
                return int(entry.name)
    raise AssertionError(f"no stub process for model {model}")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process frozen (SIGSTOP) inside, running again on exit."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _emotions(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/emotions", json={"texts": ["We walked home in the rain."]})


def test_an_open_event_stream_keeps_its_units_until_it_ends(small_triton, small_repository) -> None:
    costs = WorkCosts()
    stream_cost = costs.tokens(STREAM_TOKENS)
    settings = settings_for(small_triton, small_repository, admission_budget=stream_cost)
    body = {
        "texts": [journal_corpus()[3]],
        "max_new_tokens": STREAM_TOKENS,
        "min_new_tokens": STREAM_TOKENS,
        "num_beams": 1,
    }
    with running_gateway(settings) as gateway, httpx.Client(base_url=gateway.http_url, timeout=60) as client:
        assert _emotions(client).status_code == 200
        stub = _stub_pid(small_triton, "tiny_t5_stream")
        headers = {"accept": "text/event-stream"}
        with client.stream("POST", "/v1/summarize", json=body, headers=headers) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("event: ")
            # Generation cannot finish while its model is frozen: the stream is open for certain.
            with stopped(stub):
                refused = _emotions(client)
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "2"
                assert refused.json()["error"]["type"] == "overloaded"
            events = [line for line in lines if line.startswith("event: ")]
        assert events[-1] == "event: summary"
        assert _emotions(client).status_code == 200  # the stream's units came back when it ended


def _blocked_upload(stub: samo_v1_pb2_grpc.SamoStub, release: threading.Event):
    """A TranscribeStream call whose client sends nothing until `release` is set."""

    def chunks():
        release.wait(60)
        return
        yield  # pragma: no cover

    return stub.TranscribeStream(chunks(), timeout=60)


class HeldUpload:
    """An upload held open (no chunks sent) while `refused` waits for another call to be refused."""

    def __init__(self, stub: samo_v1_pb2_grpc.SamoStub) -> None:
        self.stub = stub
        self.release = threading.Event()
        self.call = _blocked_upload(stub, self.release)

    def refused(self, code: grpc.StatusCode, deadline_s: float = 30.0) -> grpc.RpcError:
        """The first refusal of a DetectEmotions call with `code`. The upload reaches the server
        asynchronously, and one refused itself (a call before it still counted) is opened again."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.call.done():
                self.call = _blocked_upload(self.stub, self.release)
            try:
                _detect(self.stub, ["Fine."])
            except grpc.RpcError as error:
                if error.code() == code:
                    return error
                raise
            time.sleep(0.05)
        raise AssertionError(f"never refused with {code}")

    def cancel(self) -> None:
        self.call.cancel()
        self.release.set()


def _answered_again(stub: samo_v1_pb2_grpc.SamoStub, deadline_s: float = 30.0) -> None:
    """DetectEmotions answers once the held call's slot or units are back (released asynchronously)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            assert len(_detect(stub, ["Fine."]).results) == 1
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > end:
                raise
            time.sleep(0.05)


def _detect(stub: samo_v1_pb2_grpc.SamoStub, texts: list[str]):
    return stub.DetectEmotions(samo_v1_pb2.DetectEmotionsRequest(texts=texts), timeout=30)


def test_a_streamed_upload_is_admitted_before_its_chunks_and_released_when_cancelled(
    small_triton, small_repository
) -> None:
    budget = WorkCosts().audio(0)  # exactly one upload's first window
    settings = settings_for(small_triton, small_repository, admission_budget=budget)
    with running_gateway(settings) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        upload = HeldUpload(stub)
        try:
            error = upload.refused(grpc.StatusCode.RESOURCE_EXHAUSTED)
            metadata = dict(error.trailing_metadata())
            assert metadata["samo-error-type"] == "overloaded"
            assert metadata["retry-after"] == "2"
            # A second upload is refused before it sends a byte.
            with pytest.raises(grpc.RpcError) as refused:
                next(_blocked_upload(stub, upload.release))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            upload.cancel()
        _answered_again(stub)  # the cancelled upload's units came back


def test_grpc_limits_concurrent_calls_and_message_sizes(small_triton, small_repository) -> None:
    settings = settings_for(
        small_triton,
        small_repository,
        grpc_max_concurrent_rpcs=1,
        grpc_max_message_bytes=1 << 20,
        grpc_max_send_message_bytes=4096,
    )
    with running_gateway(settings) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        assert len(_detect(stub, ["Fine."]).results) == 1
        # A request over the receive limit, and a response over the send limit (64 texts' scores).
        with pytest.raises(grpc.RpcError) as too_big:
            _detect(stub, ["a" * 20_000] * 60)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as too_big_out:
            _detect(stub, [f"Day {i} was long." for i in range(64)])
        assert too_big_out.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # One call in progress (an upload waiting for its chunks): the next is refused.
        upload = HeldUpload(stub)
        try:
            error = upload.refused(grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert "Concurrent RPC limit exceeded" in error.details()
        finally:
            upload.cancel()
        _answered_again(stub)


def test_a_full_model_queue_and_a_stale_queued_request_are_answered_with_429(
    small_triton, small_repository
) -> None:
    """64 texts fill a batch, so each request is one execution: one runs, one waits (the queue holds
    one) and the rest are refused by Triton at once; the waiting one is refused when its queue timeout
    has passed. Both are overload (429), not failure: nothing reloads a model for being busy."""
    settings = settings_for(small_triton, small_repository)
    body = {
        "texts": [f"Entry {i}: the day went better than I feared." for i in range(64)],
        "model": SLOW_EMOTION,
    }
    with running_gateway(settings) as gateway:
        # The start-up probe round must be over: on a busy machine its probe of the slow model can
        # reach Triton after the request below and take the one queue place the test counts on.
        wait_http_ok(f"{gateway.http_url}/health/ready", timeout_s=60)
        with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
            # Until one request is answered alone, the gateway's start-up probe may hold the model.
            end = time.monotonic() + 60
            while (
                client.post("/v1/emotions", json={"texts": ["Idle?"], "model": SLOW_EMOTION}).status_code
                != 200
            ):
                assert time.monotonic() < end, "the slow model never answered"

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as client:
                tasks = [asyncio.create_task(client.post("/v1/emotions", json=body)) for _ in range(6)]
                # Four answers come back before the first execution ends: they did not wait for it.
                done, _ = await asyncio.wait(tasks, timeout=SLOW_EXECUTION_S * 0.9)
                refused = [task.result().status_code for task in done]
                assert refused.count(429) >= 4, refused
                return list(await asyncio.gather(*tasks))

        responses = asyncio.run(run())
        assert sorted(r.status_code for r in responses) == [200, 429, 429, 429, 429, 429]
        messages = sorted(r.json()["error"]["message"] for r in responses if r.status_code == 429)
        assert messages == [
            f"model `{SLOW_EMOTION}` could not start the request in time; retry shortly",
            *[f"model `{SLOW_EMOTION}` has a full queue; retry shortly"] * 4,
        ]
        for response in responses:
            if response.status_code == 429:
                assert response.headers["retry-after"] == "2"
                assert response.json()["error"]["type"] == "overloaded"
        with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
            assert _emotions(client).status_code == 200
