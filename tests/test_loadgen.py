"""Tests for the light load generator, against real servers on 127.0.0.1.

Two servers run in background threads for the whole module: a raw asyncio HTTP/1.1 server whose routes
exercise framing edge cases (chunked bodies, ``Connection: close``, silent closes, errors, hangs), and a
FastAPI app under uvicorn as a realistic peer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from load_tests.loadgen import (
    LoadResult,
    arrival_times,
    format_table,
    run_load,
    run_load_sync,
    run_open_loop,
    run_open_loop_sync,
)

BODIES = [json.dumps({"text": f"journal entry {i}"}).encode() for i in range(5)]
SLOW_S = 0.010
# The serial route answers one request at a time, each after this long: at most 1 / SERIAL_S per second.
SERIAL_S = 0.050


class RawServer:
    """A minimal keep-alive HTTP/1.1 server with routes for each edge case, in its own thread."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.bodies: Counter[bytes] = Counter()
        self.first_bodies: list[bytes] = []
        self.bad_requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._serial: asyncio.Lock | None = None
        self._thread = threading.Thread(target=self._main, name="raw-http", daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        assert self._ready.wait(5), "raw server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())
        handlers = asyncio.all_tasks(self._loop)  # e.g. /hang, still sleeping
        for task in handlers:
            task.cancel()
        if handlers:  # gather() of nothing, outside the loop, would look for a loop in this thread
            self._loop.run_until_complete(asyncio.gather(*handlers, return_exceptions=True))
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._serial = asyncio.Lock()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = True
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                fields = dict(line.split(": ", 1) for line in lines[1:] if line)
                body = await reader.readexactly(int(fields["Content-Length"]))
                self.requests += 1
                self.bodies[body] += 1
                if first:
                    self.first_bodies.append(body)
                    first = False
                ok = (
                    method == "POST"
                    and fields.get("Host") == f"127.0.0.1:{self.port}"
                    and fields.get("Content-Type") == "application/json"
                    and body in BODIES
                )
                if not ok:
                    self.bad_requests += 1
                if not await self._respond(path, body, writer):
                    return
        finally:
            writer.close()

    async def _respond(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write the response for ``path``; return whether to keep the connection open."""
        payload = b'{"ok":true}'
        simple = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n" + payload
        if path == "/ok":
            writer.write(simple)
        elif path == "/slow":
            await asyncio.sleep(SLOW_S)
            writer.write(simple)
        elif path == "/serial":  # a server with one worker: requests queue behind each other
            assert self._serial is not None
            async with self._serial:
                await asyncio.sleep(SERIAL_S)
            writer.write(simple)
        elif path == "/mixed":  # every body with an even index fails
            if BODIES.index(body) % 2 == 0:
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror")
            else:
                writer.write(simple)
        elif path == "/chunked":  # a 100 Continue first, chunk extensions, a chunk over 64 KiB, a trailer
            big = b"x" * 100_000
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4;name=value\r\nabcd\r\n" + f"{len(big):x}\r\n".encode() + big + b"\r\n"
                b"0\r\nX-Trailer: yes\r\n\r\n"
            )
        elif path == "/close":  # announces the close
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n" + payload)
            await writer.drain()
            return False
        elif path == "/silent-close":  # claims keep-alive, then closes anyway
            writer.write(simple)
            await writer.drain()
            return False
        elif path == "/eof-body":  # HTTP/1.0, no length: the body ends with the connection
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + payload)
            await writer.drain()
            return False
        elif path == "/hang":
            await asyncio.sleep(3600)
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server


def _make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/emotions")
    async def emotions(request: Request) -> JSONResponse:
        payload = await request.json()
        return JSONResponse({"text": payload["text"], "emotions": [{"label": "joy", "score": 0.9}]})

    @app.post("/v1/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part {i}\n".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    return app


@pytest.fixture(scope="module")
def fastapi_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_make_app(), log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _assert_sane(result: LoadResult) -> None:
    assert result.requests == len(result.latencies_ms) + result.errors
    assert result.successes == len(result.latencies_ms)
    assert all(latency > 0 for latency in result.latencies_ms)
    if result.latencies_ms:
        assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms <= max(result.latencies_ms)
        assert math.isclose(result.throughput, result.successes / result.duration_s)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_closed_loop_counts_and_latencies(raw: RawServer, concurrency: int) -> None:
    before = raw.requests
    duration = 0.7
    result = run_load_sync(
        raw.url("/slow"), BODIES, concurrency=concurrency, duration_s=duration, warmup_s=0.15
    )
    _assert_sane(result)
    assert result.concurrency == concurrency
    assert result.duration_s == duration
    assert result.errors == 0
    # Closed loop: each worker has one request in flight, each takes >= 10 ms, and only the measurement
    # window counts (the warmup's requests reached the server but are not in the result).
    assert result.requests <= concurrency * (duration / SLOW_S + 1)
    assert result.requests >= concurrency * 0.3 * duration / SLOW_S
    assert raw.requests - before > result.requests
    assert result.p50_ms >= SLOW_S * 1000 * 0.9
    assert result.p99_ms < 500


def test_bodies_cycled_from_different_offsets(raw: RawServer) -> None:
    raw.bodies.clear()
    raw.first_bodies.clear()
    bad = raw.bad_requests
    result = run_load_sync(raw.url("/ok"), BODIES, concurrency=5, duration_s=0.35, warmup_s=0.1)
    _assert_sane(result)
    assert result.errors == 0
    assert result.requests > 100
    assert raw.bad_requests == bad  # method, Host, Content-Type, Content-Length and body all arrived intact
    assert set(raw.bodies) == set(BODIES)
    counts = [raw.bodies[body] for body in BODIES]
    assert max(counts) - min(counts) <= 5  # round-robin per worker
    assert sorted(raw.first_bodies) == sorted(BODIES)  # 5 workers, 5 bodies: each starts elsewhere
    assert raw.connections >= 5


def test_non_2xx_counts_as_error_and_keeps_going(raw: RawServer) -> None:
    connections = raw.connections
    result = run_load_sync(raw.url("/mixed"), BODIES, concurrency=2, duration_s=0.35, warmup_s=0.1)
    _assert_sane(result)
    assert result.errors > 0
    assert result.successes > 0
    # Bodies 0, 2 and 4 of 5 fail: 60 % errors, up to rounding at the window's edges.
    assert result.errors / result.requests == pytest.approx(0.6, abs=0.05)
    assert raw.connections - connections == 2  # an error response does not cost the connection


def test_all_errors(raw: RawServer) -> None:
    result = run_load_sync(raw.url("/missing"), BODIES, concurrency=2, duration_s=0.3, warmup_s=0.1)
    assert result.requests > 0
    assert result.errors == result.requests
    assert result.latencies_ms == ()
    assert result.throughput == 0.0
    assert math.isnan(result.p50_ms) and math.isnan(result.p99_ms)


def test_chunked_response(raw: RawServer) -> None:
    connections = raw.connections
    result = run_load_sync(raw.url("/chunked"), BODIES, concurrency=2, duration_s=0.35, warmup_s=0.1)
    _assert_sane(result)
    assert result.errors == 0
    assert result.requests > 20
    assert raw.connections - connections == 2  # framing was right, so keep-alive held


@pytest.mark.parametrize("path", ["/close", "/silent-close", "/eof-body"])
def test_reconnects_when_server_closes(raw: RawServer, path: str) -> None:
    connections = raw.connections
    result = run_load_sync(raw.url(path), BODIES, concurrency=2, duration_s=0.35, warmup_s=0.1)
    _assert_sane(result)
    assert result.errors == 0
    assert result.requests > 10
    assert raw.connections - connections >= result.requests


def test_hanging_server_is_bounded(raw: RawServer) -> None:
    started = time.monotonic()
    result = run_load_sync(raw.url("/hang"), BODIES, concurrency=3, duration_s=0.3, warmup_s=0.1)
    elapsed = time.monotonic() - started
    assert result.requests == 0
    assert result.errors == 0
    assert elapsed < 0.1 + 0.3 + 1.5


def test_connection_refused_is_bounded() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        started = time.monotonic()
        result = run_load_sync(
            f"http://127.0.0.1:{port}/ok", BODIES, concurrency=2, duration_s=0.3, warmup_s=0.0
        )
        elapsed = time.monotonic() - started
    assert result.successes == 0
    assert 0 < result.errors < 2 * 0.3 / 0.05 + 4  # counted, with a backoff between attempts
    assert elapsed < 1.5


def test_fastapi_under_uvicorn(fastapi_url: str) -> None:
    result = asyncio.run(
        run_load(
            f"{fastapi_url}/v1/emotions",
            BODIES,
            concurrency=4,
            duration_s=0.3,
            warmup_s=0.1,
            headers={"X-Request-Source": "loadgen-test"},
        )
    )
    _assert_sane(result)
    assert result.errors == 0
    assert result.requests > 20

    streamed = run_load_sync(f"{fastapi_url}/v1/stream", BODIES, concurrency=2, duration_s=0.3, warmup_s=0.1)
    _assert_sane(streamed)
    assert streamed.errors == 0
    assert streamed.requests > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "https://127.0.0.1:1/x"}, "only http://"),
        ({"bodies": []}, "bodies"),
        ({"concurrency": 0}, "concurrency"),
        ({"duration_s": 0}, "duration_s"),
        ({"warmup_s": -1}, "warmup_s"),
        ({"headers": {"Content-Length": "3"}}, "set by the load generator"),
        ({"headers": {"X-Bad": "a\r\nb"}}, "invalid header"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "url": "http://127.0.0.1:1/x",
        "bodies": BODIES,
        "concurrency": 1,
        "duration_s": 0.1,
        "warmup_s": 0.0,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        run_load_sync(**arguments)  # type: ignore[arg-type]


def test_format_table() -> None:
    rows = [
        {"model": "emotion", "concurrency": 1, "throughput": 1234.5678, "p50_ms": 0.5, "note": "a|b"},
        {"model": "emotion-onnx", "concurrency": 16, "throughput": float("nan"), "note": None},
    ]
    table = format_table(rows, ["model", "concurrency", "throughput", "p50_ms", "note"])
    assert table == (
        "| model        | concurrency | throughput | p50_ms | note |\n"
        "| ------------ | ----------- | ---------- | ------ | ---- |\n"
        "| emotion      | 1           | 1234.57    | 0.50   | a\\|b |\n"
        "| emotion-onnx | 16          | n/a        |        |      |\n"
    )
    assert format_table([], ["a"]) == "| a   |\n| --- |\n"


def test_load_result_row() -> None:
    result = LoadResult(
        concurrency=2, requests=5, errors=1, duration_s=2.0, latencies_ms=(1.0, 2.0, 3.0, 4.0)
    )
    assert result.throughput == 2.0
    assert result.p50_ms == 2.5
    row = result.as_row()
    assert row["concurrency"] == 2 and row["requests"] == 5 and row["errors"] == 1
    assert row["throughput_rps"] == 2.0 and row["p50_ms"] == 2.5


def test_arrival_times_are_poisson() -> None:
    times = arrival_times(200.0, 50.0, seed=3)
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 50.0
    assert len(times) == pytest.approx(200 * 50, rel=0.05)  # 10,000 expected, sd 100
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert sd / mean == pytest.approx(1.0, abs=0.05)  # exponential gaps: as variable as their mean
    assert arrival_times(200.0, 50.0, seed=3) == times  # reproducible per seed
    assert arrival_times(200.0, 50.0, seed=4) != times
    with pytest.raises(ValueError, match="rate"):
        arrival_times(0, 1.0)


def test_open_loop_below_capacity(raw: RawServer) -> None:
    """At a fifth of the serial route's capacity every request is answered, none waits long for a
    connection, and no latency is below the service time."""
    rate = 0.2 / SERIAL_S
    result = run_open_loop_sync(raw.url("/serial"), BODIES, rate_per_s=rate, duration_s=2.0, warmup_s=0.2)
    _assert_sane(result)
    assert result.mode == "open" and result.offered_rps == rate
    assert result.errors == 0 and result.unfinished == 0
    assert result.requests == pytest.approx(rate * 2.0, abs=4 * math.sqrt(rate * 2.0))
    assert min(result.latencies_ms) >= SERIAL_S * 1000 * 0.95
    assert len(result.send_lag_ms) == result.successes
    assert result.as_row()["offered_rps"] == rate


def test_open_loop_charges_queueing_to_the_server() -> None:
    """Offered twice what the serial route can serve, the backlog grows for the whole run. Latency from
    the due time sees it; a closed loop on the same server reports one service time per request.
    Each run gets its own server: the serial route keeps serving a run's backlog after it ended."""
    rate = 2.0 / SERIAL_S
    duration = 2.0
    with RawServer() as raw:
        result = run_open_loop_sync(
            raw.url("/serial"), BODIES, rate_per_s=rate, duration_s=duration, warmup_s=0.0, drain_s=0.3
        )
    _assert_sane(result)
    # The server answers at most one request per SERIAL_S; the rest are still queued when the run ends.
    assert result.successes <= (duration + 0.3) / SERIAL_S + 2
    assert result.unfinished > 0
    expected = rate * duration
    assert result.requests + result.unfinished == pytest.approx(expected, abs=5 * math.sqrt(expected))
    # The k-th answer cannot come before k service times: half-way through, the backlog is about
    # (rate - capacity) x 1 s = 20 requests, about 1 s of waiting, all of it counted.
    assert max(result.latencies_ms) >= 0.5 * duration * 1000 * 0.5
    assert result.p99_ms > 10 * SERIAL_S * 1000
    assert max(result.send_lag_ms) < result.p99_ms  # with enough connections the queue is the server's

    with RawServer() as raw:
        closed = run_load_sync(raw.url("/serial"), BODIES, concurrency=1, duration_s=0.5, warmup_s=0.0)
    assert closed.successes > 0
    assert closed.p99_ms < result.p99_ms  # coordinated omission: the closed loop hides the queue

    # With two connections the queue forms in the generator instead; it is charged all the same.
    with RawServer() as raw:
        few = run_open_loop_sync(
            raw.url("/serial"),
            BODIES,
            rate_per_s=rate,
            duration_s=duration,
            warmup_s=0.0,
            drain_s=0.3,
            max_connections=2,
        )
    assert few.unfinished > 0
    assert max(few.send_lag_ms) > 10 * SERIAL_S * 1000
    assert max(few.latencies_ms) >= 0.5 * duration * 1000 * 0.5


def test_open_loop_counts_unanswered_requests(raw: RawServer) -> None:
    started = time.monotonic()
    result = run_open_loop_sync(
        raw.url("/hang"), BODIES, rate_per_s=20, duration_s=0.5, warmup_s=0.0, drain_s=0.2, max_connections=4
    )
    assert time.monotonic() - started < 0.5 + 0.2 + 1.5
    assert result.successes == 0 and result.requests == 0
    assert result.unfinished > 0  # due, never answered: reported, not dropped
    assert math.isnan(result.p99_ms)


def test_open_loop_errors_and_arguments(raw: RawServer) -> None:
    result = asyncio.run(
        run_open_loop(raw.url("/mixed"), BODIES, rate_per_s=200, duration_s=0.5, warmup_s=0.1, seed=1)
    )
    _assert_sane(result)
    assert result.errors > 0 and result.successes > 0 and result.unfinished == 0
    for kwargs, message in [
        ({"rate_per_s": 0}, "rate_per_s"),
        ({"max_connections": 0}, "max_connections"),
        ({"drain_s": -1}, "drain_s"),
    ]:
        arguments: dict[str, object] = {"rate_per_s": 10.0, "duration_s": 0.1, **kwargs}
        with pytest.raises(ValueError, match=message):
            run_open_loop_sync(raw.url("/ok"), BODIES, **arguments)  # type: ignore[arg-type]
