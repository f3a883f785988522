"""One CSV row per request a Locust run makes, for plots over time and exact percentiles afterwards.

Columns: `t_s` (seconds since the test started, when the answer came), `transport` (`http` or `grpc`),
`name` (the statistics entry), `latency_ms`, `failed` (0 or 1). No payload, answer or error text.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import IO, Any

COLUMNS = ("t_s", "transport", "name", "latency_ms", "failed")
GRPC_REQUEST_TYPE = "grpc"


def transport_of(request_type: str) -> str:
    return "grpc" if request_type == GRPC_REQUEST_TYPE else "http"


class RequestLog:
    """Listens to Locust's request event and appends a row per request to `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)
        self._start = time.perf_counter()

    def restart_clock(self) -> None:
        self._start = time.perf_counter()

    def on_request(
        self, request_type: str, name: str, response_time: float, exception: BaseException | None, **_: Any
    ) -> None:
        self._writer.writerow(
            (
                f"{time.perf_counter() - self._start:.3f}",
                transport_of(request_type),
                name,
                f"{response_time:.2f}",
                int(exception is not None),
            )
        )

    def close(self) -> None:
        self._file.close()


def read_request_log(path: str | Path) -> list[tuple[float, str, str, float, bool]]:
    """The rows of a request log as (t_s, transport, name, latency_ms, failed)."""
    with Path(path).open(newline="") as file:
        return [
            (float(row["t_s"]), row["transport"], row["name"], float(row["latency_ms"]), row["failed"] == "1")
            for row in csv.DictReader(file)
        ]
