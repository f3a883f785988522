"""The overhead benchmark's load generators: wrk over HTTP (load_tests/wrk.py) and several gRPC client
processes (load_tests/grpc_load.py), against small servers that count what they receive."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from load_tests.grpc_load import run_grpc_load
from load_tests.wrk import run_wrk
from tests.test_loadgen import BODIES, RawServer

METHOD = "/test.Echo/Call"
FAIL = b"fail"


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


def test_wrk_sends_every_body_in_turn_and_counts_answers(raw: RawServer) -> None:
    before, bodies_before = raw.requests, Counter(raw.bodies)
    result = run_wrk(raw.url("/ok"), BODIES, concurrency=4, duration_s=1)
    received = raw.requests - before
    assert result.errors == 0 and raw.bad_requests == 0
    # wrk counts answers; the server also saw what was in flight when wrk stopped (at most one per
    # connection).
    assert result.requests <= received <= result.requests + 4
    sent = raw.bodies - bodies_before
    assert set(sent) == set(BODIES) and max(sent.values()) - min(sent.values()) <= 4
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.throughput == pytest.approx(result.requests / result.duration_s)


def test_wrk_counts_non_2xx_as_errors(raw: RawServer) -> None:
    result = run_wrk(raw.url("/mixed"), BODIES, concurrency=1, duration_s=1)
    # Bodies 0, 2 and 4 of each five fail.
    assert result.requests > 10
    assert result.errors == pytest.approx(result.requests * 3 / 5, abs=3)


def test_wrk_refuses_multiline_bodies(raw: RawServer) -> None:
    with pytest.raises(ValueError, match="single lines"):
        run_wrk(raw.url("/ok"), [b'{"a":\n1}'], concurrency=1, duration_s=1)


class EchoServer:
    """A gRPC server with one raw-bytes method: echoes, or fails with INVALID_ARGUMENT on `FAIL`."""

    def __init__(self) -> None:
        self.calls: Counter[bytes] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(),), daemon=True
        )

    async def _call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls[request] += 1
        if request == FAIL:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to fail")
        return request

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._call)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Echo", {"Call": handler})]
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._started.set()
        await self._stop.wait()
        await server.stop(None)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_grpc_clients_split_the_concurrency_and_count_errors() -> None:
    bodies = [b"one", b"two", FAIL]
    with EchoServer() as server:
        result = run_grpc_load(
            f"127.0.0.1:{server.port}", METHOD, bodies, concurrency=5, duration_s=1, processes=2
        )
        received = sum(server.calls.values())
    assert result.processes == 2 and result.concurrency == 5
    # Each process makes one call to connect before its clock starts; calls in flight when it stops are
    # awaited and counted.
    assert received == result.requests + 2
    assert set(server.calls) == set(bodies)
    assert result.errors == pytest.approx(result.requests / 3, abs=6)
    assert len(result.latencies_ms) == result.requests - result.errors
    assert 0 < result.percentile_ms(50) <= result.percentile_ms(99)
