"""Closed-loop HTTP load from wrk (Debian's compiled load generator), for rows where a Python client
would be the bottleneck.

A Python generator at c=256 takes most of 2 cores (measured: the same stack read 252 texts/s through
httpx and 845 through wrk), so the high-concurrency rows that measure the stack's own cost use wrk:
one thread, keep-alive connections, POST bodies taken in turn from the benchmark's texts. A Lua script
(written next to the bodies) formats the requests once, counts non-2xx answers and prints wrk's
latency percentiles as one JSON line. The caller measures wrk's CPU (`resource` children times).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
local bodies = {}
local requests = {}
local next_request = 0

init = function(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, {["Content-Type"] = args[2]}, line)
  end
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

done = function(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    concurrency: int
    requests: int
    errors: int
    """Non-2xx answers and socket errors (connect, read, write, timeout)."""
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        """Answered requests per second, errors excluded."""
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (make install does)")
    return found


def run_wrk(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    content_type: str = "application/json",
    timeout_s: float = 30.0,
) -> WrkResult:
    """`concurrency` keep-alive connections, each sending its next request as soon as the previous one is
    answered, for `duration_s`; bodies in turn (each must be one line: JSON without newlines)."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("wrk bodies must be single lines")
    with tempfile.TemporaryDirectory(prefix="samo-wrk-") as folder:
        script, lines = Path(folder) / "post.lua", Path(folder) / "bodies.txt"
        script.write_text(_SCRIPT)
        lines.write_bytes(b"\n".join(bodies) + b"\n")
        command = [
            wrk_path(),
            "--threads",
            "1",
            "--connections",
            str(concurrency),
            "--duration",
            f"{max(1, round(duration_s))}s",
            "--timeout",
            f"{max(1, round(timeout_s))}s",
            "--script",
            str(script),
            url,
            "--",
            str(lines),
            content_type,
        ]
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr.strip()}")
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    return WrkResult(
        concurrency=concurrency,
        requests=summary["requests"],
        errors=summary["status_errors"] + summary["socket_errors"],
        duration_s=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )
