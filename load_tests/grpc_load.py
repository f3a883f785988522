"""Closed-loop gRPC load from several client processes, for rows where one Python client would be the
bottleneck (there is no compiled gRPC load generator in Debian; ghz is not packaged).

Each process runs `concurrency / processes` calls at a time on one channel (grpc.aio), sends
pre-serialized requests as raw bytes and does not parse the answers (a call counts once it ends with
OK), so a client process spends little more than gRPC's own per-call cost. `python -m
load_tests.grpc_load` is one such process; it prints its counts and latencies as one JSON line. The
caller measures the processes' CPU (`resource` children times).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GrpcLoadResult:
    concurrency: int
    processes: int
    requests: int
    errors: int
    duration_s: float
    latencies_ms: tuple[float, ...]

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _client(
    target: str, method: str, bodies: list[bytes], concurrency: int, duration_s: float, offset: int
) -> dict:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: no message building or parsing
        await call(bodies[0], timeout=60)  # connected before the clock starts
        started = time.perf_counter()
        stop = started + duration_s

        turn = itertools.count(offset)  # bodies in turn across the process's calls

        async def worker() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < stop:
                try:
                    await call(bodies[next(turn) % len(bodies)], timeout=60)
                    latencies.append((time.perf_counter() - sent) * 1000)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "duration_s": elapsed,
        "latencies_ms": latencies,
    }


def run_grpc_load(
    target: str,
    method: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    processes: int,
) -> GrpcLoadResult:
    """`concurrency` calls in flight, spread over `processes` client processes, for `duration_s`."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    with tempfile.TemporaryDirectory(prefix="samo-grpc-load-") as folder:
        lines = Path(folder) / "bodies.json"
        lines.write_text(json.dumps([body.hex() for body in bodies]))
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "load_tests.grpc_load",
                    target,
                    method,
                    str(lines),
                    str(share),
                    str(duration_s),
                    str(index * len(bodies) // processes),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for index, share in enumerate(shares)
        ]
        outputs = [client.communicate()[0] for client in clients]
    if any(client.returncode for client in clients):
        raise RuntimeError(f"a gRPC load client failed: exit codes {[c.returncode for c in clients]}")
    parts = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    return GrpcLoadResult(
        concurrency=concurrency,
        processes=processes,
        requests=sum(p["requests"] for p in parts),
        errors=sum(p["errors"] for p in parts),
        duration_s=max(p["duration_s"] for p in parts),
        latencies_ms=tuple(latency for p in parts for latency in p["latencies_ms"]),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One gRPC load client process (see run_grpc_load).")
    parser.add_argument("target")
    parser.add_argument("method")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("duration_s", type=float)
    parser.add_argument("offset", type=int, help="The first body this process sends.")
    args = parser.parse_args(argv)
    bodies = [bytes.fromhex(body) for body in json.loads(args.bodies.read_text())]
    result = asyncio.run(
        _client(args.target, args.method, bodies, args.concurrency, args.duration_s, args.offset)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
