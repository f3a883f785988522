"""A very light HTTP/1.1 load generator: closed loop, and open loop at a constant arrival rate.

Why this exists: the benchmarks run on a small (2-core) machine where the load generator shares the CPU
with the server under test. A generator built on a full HTTP client (httpx) spends about 2 ms of CPU per
request, which on such a box takes CPU away from the server and makes the server look slower than it is.
This module keeps the client side as cheap as possible (about 0.04 ms of CPU per request):

* every request is prebuilt once as raw bytes (request line, ``Host``, ``Content-Type``,
  ``Content-Length``, extra headers, body), so sending one is a single ``write``;
* each worker owns one keep-alive connection opened with :func:`asyncio.open_connection` and runs a
  closed loop: send a request, read the whole response, record the latency, send the next one;
* responses are parsed minimally: the status line and the few headers that matter for framing
  (``Content-Length``, ``Transfer-Encoding: chunked``, ``Connection``).

Open loop (:func:`run_open_loop`): requests are due at Poisson arrival times at a given rate, whatever
the server does; latency runs from the time a request was *due*, not from when it was sent, so a server
that falls behind is charged for the time requests waited for a free connection (no coordinated
omission: a closed loop slows its own load when the server slows, and hides the tail). Requests due in
the window but unanswered when the run ends are counted as ``unfinished``, never dropped silently.

The run is bounded: workers start no request after ``warmup_s + duration_s``; requests still in flight
then get a short drain and are cancelled after it. Only requests that complete inside the measurement
window (after the warmup) are counted. A 2xx status is a success; any other status, or a transport
failure, is an error, and the worker keeps going (reconnecting when the connection is gone).

Only plain ``http://`` URLs are supported, and the generator only ever connects to the host and port of
the URL it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

__all__ = [
    "LoadResult",
    "arrival_times",
    "format_table",
    "run_load",
    "run_load_sync",
    "run_open_loop",
    "run_open_loop_sync",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Requests in flight when the window ends get this long to finish (they are not counted either way);
# after it, the workers are cancelled.
_DRAIN_S = 0.5
# Pause after a failed connect, so that a server that is down does not turn the generator into a busy loop.
_CONNECT_BACKOFF_S = 0.05
# Header names the generator sets itself; passing them in ``headers`` is refused.
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding"})
_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"


@dataclass(frozen=True)
class LoadResult:
    """Outcome of one closed-loop run, counted over the measurement window (warmup excluded).

    ``requests`` counts every request that completed in the window, successes and errors alike;
    ``errors`` counts those with a non-2xx status or a transport failure; ``latencies_ms`` holds one
    latency per successful request (so ``len(latencies_ms) == requests - errors``).
    """

    concurrency: int
    """Closed loop: clients; open loop: the most connections (requests in flight) allowed."""
    requests: int
    errors: int
    duration_s: float
    latencies_ms: tuple[float, ...]
    offered_rps: float | None = None
    """Open loop: the arrival rate asked for (requests per second); None for a closed loop."""
    unfinished: int = 0
    """Open loop: requests due in the window still unanswered when the run ended (not in ``requests``)."""
    send_lag_ms: tuple[float, ...] = ()
    """Open loop: how late each counted request was sent after it was due (waiting for a connection,
    or the generator's own lag); its tail says whether the generator kept up."""

    @property
    def mode(self) -> str:
        return "closed" if self.offered_rps is None else "open"

    @property
    def successes(self) -> int:
        """Number of successful (2xx) requests in the window."""
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the measurement window."""
        return self.successes / self.duration_s if self.duration_s > 0 else 0.0

    def _percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        return float(np.percentile(np.asarray(self.latencies_ms, dtype=np.float64), q))

    @property
    def p50_ms(self) -> float:
        """Median latency of successful requests in milliseconds (NaN when there are none)."""
        return self._percentile(50)

    @property
    def p95_ms(self) -> float:
        """95th-percentile latency of successful requests in milliseconds (NaN when there are none)."""
        return self._percentile(95)

    @property
    def p90_ms(self) -> float:
        """90th-percentile latency of successful requests in milliseconds (NaN when there are none)."""
        return self._percentile(90)

    @property
    def p99_ms(self) -> float:
        """99th-percentile latency of successful requests in milliseconds (NaN when there are none)."""
        return self._percentile(99)

    @property
    def p999_ms(self) -> float:
        """99.9th-percentile latency of successful requests in milliseconds (NaN when there are none)."""
        return self._percentile(99.9)

    def as_row(self) -> dict[str, object]:
        """A flat summary, ready for :func:`format_table`."""
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": self.throughput,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "offered_rps": self.offered_rps,
            "unfinished": self.unfinished,
        }


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    requests: tuple[bytes, ...]


class _ConnectionGone(Exception):
    """The peer closed or reset the connection before sending any part of a response."""


def _build_target(
    url: str, bodies: Sequence[bytes], content_type: str, headers: Mapping[str, str] | None
) -> _Target:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host_header = parts.netloc.rpartition("@")[2]

    extra = ""
    for name, value in (headers or {}).items():
        if name.strip().lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the load generator itself")
        if any(c in f"{name}{value}" for c in "\r\n") or ":" in name or not name.strip():
            raise ValueError(f"invalid header {name!r}: {value!r}")
        extra += f"{name}: {value}\r\n"
    if any(c in content_type for c in "\r\n"):
        raise ValueError(f"invalid content type {content_type!r}")

    prefix = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: {content_type}\r\n"
    requests = tuple(
        f"{prefix}Content-Length: {len(body)}\r\n{extra}\r\n".encode("latin-1") + bytes(body)
        for body in bodies
    )
    return _Target(host=parts.hostname, port=port, requests=requests)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one full response; return its status and whether the connection may be reused.

    Raises :class:`_ConnectionGone` when the connection ended before any byte of the response arrived.
    """
    while True:
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ConnectionGone from exc
            raise
        except ConnectionResetError as exc:
            raise _ConnectionGone from exc

        lines = head[:-4].split(_CRLF)
        status_parts = lines[0].split(None, 2)
        if len(status_parts) < 2 or not status_parts[0].startswith(b"HTTP/"):
            raise ValueError(f"malformed status line {lines[0][:80]!r}")
        version = status_parts[0]
        status = int(status_parts[1])

        content_length = -1
        chunked = False
        connection = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                connection = value.lower()

        # HTTP/1.1 connections persist unless closed; HTTP/1.0 ones only when asked to.
        http10 = version == b"HTTP/1.0"
        keep_alive = (b"keep-alive" in connection) if http10 else (b"close" not in connection)

        if 100 <= status < 200 and status != 101:
            continue  # interim response (100 Continue, 103 Early Hints): the real one follows
        if status in (101, 204, 304):
            return status, keep_alive and status != 101
        if chunked:
            await _read_chunked(reader)
        elif content_length >= 0:
            await reader.readexactly(content_length)
        else:
            await reader.read()  # body delimited by the end of the connection
            keep_alive = False
        return status, keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(_CRLF)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(_CRLF) != _CRLF:
                pass  # trailer fields
            return
        chunk = await reader.readexactly(size + 2)
        if not chunk.endswith(_CRLF):
            raise ValueError("chunk not terminated by CRLF")


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


class _Worker:
    """One closed-loop client with one keep-alive connection; results are kept per worker."""

    def __init__(self, target: _Target, offset: int, window_start: float, window_end: float) -> None:
        self.target = target
        self.offset = offset
        self.window_start = window_start
        self.window_end = window_end
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reused = False

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)
        self._reused = False

    def _disconnect(self) -> None:
        _close(self._writer)
        self._reader = self._writer = None

    async def _exchange(self, request: bytes) -> tuple[int, bool]:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or reader.at_eof() or writer.is_closing():
            self._disconnect()
            await self._connect()
            reader, writer = self._reader, self._writer
            assert reader is not None and writer is not None
        try:
            writer.write(request)
            await writer.drain()
            return await _read_response(reader)
        except (_ConnectionGone, ConnectionResetError, BrokenPipeError):
            if not self._reused:
                raise
        # The server dropped an idle keep-alive connection before reading this request: retry once.
        logger.debug("keep-alive connection was closed by the server; reconnecting")
        self._disconnect()
        await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        return await _read_response(self._reader)

    async def run(self) -> None:
        requests = self.target.requests
        n = len(requests)
        index = self.offset % n
        clock = time.perf_counter
        window_start, window_end = self.window_start, self.window_end
        latencies = self.latencies_ms
        try:
            while True:
                started = clock()
                if started >= window_end:
                    return
                request = requests[index]
                index = index + 1 if index + 1 < n else 0
                try:
                    status, keep_alive = await self._exchange(request)
                except (OSError, EOFError, ValueError, _ConnectionGone, asyncio.LimitOverrunError) as exc:
                    connected = self._writer is not None
                    self._disconnect()
                    done = clock()
                    if window_start <= done <= window_end:
                        self.errors += 1
                    logger.debug("request failed: %r", exc)
                    if not connected:
                        await asyncio.sleep(max(0.0, min(_CONNECT_BACKOFF_S, window_end - done)))
                    continue
                done = clock()
                if window_start <= done <= window_end:
                    if 200 <= status < 300:
                        latencies.append((done - started) * 1000.0)
                    else:
                        self.errors += 1
                if keep_alive:
                    self._reused = True
                else:
                    self._disconnect()
        finally:
            self._disconnect()


class _Schedule:
    """Due times shared by the open-loop workers; each due time is taken by exactly one worker."""

    def __init__(self, due: Sequence[float]) -> None:
        self.due = due
        self.next = 0

    def take(self) -> int | None:
        if self.next >= len(self.due):
            return None
        index = self.next
        self.next += 1
        return index


class _OpenWorker(_Worker):
    """One connection of the open loop: takes the next due request, waits until it is due (or sends at
    once when it is already late), and records latency from the due time."""

    def __init__(self, target: _Target, schedule: _Schedule, window_start: float, window_end: float) -> None:
        super().__init__(target, 0, window_start, window_end)
        self.schedule = schedule
        self.send_lag_ms: list[float] = []
        self.in_window = 0  # due in the window and answered (success or error)

    async def run(self) -> None:
        requests = self.target.requests
        n = len(requests)
        clock = time.perf_counter
        window_start, window_end = self.window_start, self.window_end
        try:
            while (index := self.schedule.take()) is not None:
                due = self.schedule.due[index]
                wait = due - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent = clock()
                counted = window_start <= due < window_end
                try:
                    status, keep_alive = await self._exchange(requests[index % n])
                except (OSError, EOFError, ValueError, _ConnectionGone, asyncio.LimitOverrunError) as exc:
                    connected = self._writer is not None
                    self._disconnect()
                    if counted:
                        self.errors += 1
                        self.in_window += 1
                    logger.debug("request failed: %r", exc)
                    if not connected:
                        await asyncio.sleep(_CONNECT_BACKOFF_S)
                    continue
                done = clock()
                if counted:
                    self.in_window += 1
                    if 200 <= status < 300:
                        self.latencies_ms.append((done - due) * 1000.0)
                        self.send_lag_ms.append((sent - due) * 1000.0)
                    else:
                        self.errors += 1
                if keep_alive:
                    self._reused = True
                else:
                    self._disconnect()
        finally:
            self._disconnect()


def arrival_times(rate_per_s: float, span_s: float, seed: int = 0) -> list[float]:
    """Poisson arrivals at `rate_per_s` over [0, span_s): seconds from the start, increasing.

    Exponential gaps (memoryless arrivals, as independent users send) rather than a fixed period,
    which would never let requests bunch up as real traffic does."""
    if not rate_per_s > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate_per_s}")
    rng = np.random.default_rng(seed)
    expected = rate_per_s * span_s
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=int(expected + 6 * math.sqrt(expected) + 16)))
    while times[-1] < span_s:  # rare: draw more gaps until the span is covered
        more = np.cumsum(rng.exponential(1.0 / rate_per_s, size=len(times))) + times[-1]
        times = np.concatenate([times, more])
    return times[times < span_s].tolist()


def allow_connections(concurrency: int) -> None:
    """Raise this process's open-file limit to fit one socket per worker: at the usual soft limit of
    1024, a run at c=1024 fails every connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = concurrency + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, ceiling), hard))


async def run_load(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST ``bodies`` (cycled) to ``url`` from ``concurrency`` closed-loop workers.

    Each worker keeps one keep-alive connection and starts at a different offset in ``bodies``. Requests
    completing in the first ``warmup_s`` seconds are not counted; the measurement window then lasts
    ``duration_s`` seconds. The call returns after at most ``warmup_s + duration_s`` plus a short drain.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if not warmup_s >= 0:
        raise ValueError(f"warmup_s must be >= 0, got {warmup_s}")
    if not bodies:
        raise ValueError("bodies must not be empty")
    target = _build_target(url, bodies, content_type, headers)
    allow_connections(concurrency)

    n = len(target.requests)
    start = time.perf_counter()
    window_start = start + warmup_s
    window_end = window_start + duration_s
    workers = [_Worker(target, (i * n) // concurrency, window_start, window_end) for i in range(concurrency)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        _, pending = await asyncio.wait(tasks, timeout=warmup_s + duration_s + _DRAIN_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if pending:
        logger.info("cancelled %d request(s) still in flight after the drain", len(pending))
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure

    latencies = tuple(latency for worker in workers for latency in worker.latencies_ms)
    errors = sum(worker.errors for worker in workers)
    result = LoadResult(
        concurrency=concurrency,
        requests=len(latencies) + errors,
        errors=errors,
        duration_s=duration_s,
        latencies_ms=latencies,
    )
    logger.info(
        "%s c=%d: %d requests, %d errors, %.1f req/s, p50 %.2f ms, p99 %.2f ms",
        url,
        concurrency,
        result.requests,
        result.errors,
        result.throughput,
        result.p50_ms,
        result.p99_ms,
    )
    return result


async def run_open_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    rate_per_s: float,
    duration_s: float,
    warmup_s: float = 1.0,
    max_connections: int = 256,
    drain_s: float = 5.0,
    seed: int = 0,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST ``bodies`` (cycled) to ``url`` at Poisson arrival times, ``rate_per_s`` on average.

    Latency runs from each request's due time. At most ``max_connections`` requests are in flight (one
    keep-alive connection each, opened when first needed); a request due while all are busy waits, and
    its wait counts in its latency. Requests due in the first ``warmup_s`` seconds are not counted; those
    due in the next ``duration_s`` seconds are, and get ``drain_s`` after the window to be answered:
    the rest are ``unfinished``.
    """
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if not warmup_s >= 0:
        raise ValueError(f"warmup_s must be >= 0, got {warmup_s}")
    if not drain_s >= 0:
        raise ValueError(f"drain_s must be >= 0, got {drain_s}")
    if not bodies:
        raise ValueError("bodies must not be empty")
    target = _build_target(url, bodies, content_type, headers)
    allow_connections(max_connections)

    start = time.perf_counter() + 0.05  # the first due times lie after the workers are set up
    window_start = start + warmup_s
    window_end = window_start + duration_s
    due = [start + t for t in arrival_times(rate_per_s, warmup_s + duration_s, seed)]
    schedule = _Schedule(due)
    workers = [_OpenWorker(target, schedule, window_start, window_end) for _ in range(max_connections)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        _, pending = await asyncio.wait(tasks, timeout=window_end + drain_s - time.perf_counter())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure

    due_in_window = sum(1 for t in due if window_start <= t < window_end)
    answered = sum(worker.in_window for worker in workers)
    errors = sum(worker.errors for worker in workers)
    result = LoadResult(
        concurrency=max_connections,
        requests=answered,
        errors=errors,
        duration_s=duration_s,
        latencies_ms=tuple(latency for worker in workers for latency in worker.latencies_ms),
        offered_rps=rate_per_s,
        unfinished=due_in_window - answered,
        send_lag_ms=tuple(lag for worker in workers for lag in worker.send_lag_ms),
    )
    logger.info(
        "%s open loop %.1f req/s: %d answered, %d errors, %d unfinished (%d cancelled), p50 %.2f ms, p99 %.2f ms",
        url,
        rate_per_s,
        result.requests,
        result.errors,
        result.unfinished,
        len(pending),
        result.p50_ms,
        result.p99_ms,
    )
    return result


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_load_sync(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Blocking wrapper around :func:`run_load`, on uvloop when it is installed."""
    return _run(
        run_load(
            url,
            bodies,
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=warmup_s,
            content_type=content_type,
            headers=headers,
        )
    )


def run_open_loop_sync(url: str, bodies: Sequence[bytes], **options: Any) -> LoadResult:
    """Blocking wrapper around :func:`run_open_loop` (same keyword options), on uvloop when installed."""
    return _run(run_open_loop(url, bodies, **options))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """Render ``rows`` as a GitHub-flavoured markdown table with the given ``columns``.

    Floats get two decimals (NaN becomes ``n/a``), missing values and ``None`` an empty cell, and ``|``
    in text is escaped. Cells are padded so the raw text lines up. The result ends with a newline.
    """
    if not columns:
        raise ValueError("columns must not be empty")
    header = [_cell(column) for column in columns]
    body = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(3, len(header[i]), *(len(cells[i]) for cells in body)) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    out = [line(header), line(["-" * width for width in widths])]
    out.extend(line(cells) for cells in body)
    return "\n".join(out) + "\n"
