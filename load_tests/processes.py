"""Starting and stopping the servers a benchmark compares, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from samo.cpus import gateway_workers
from samo.free_ports import free_port


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def server_process(
    command: Sequence[str],
    *,
    ready_url: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group (started in `cwd`, default this one's), stopped (SIGTERM, then
    SIGKILL) on exit."""
    process = subprocess.Popen(
        list(command),
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        cwd=cwd,
    )
    try:
        wait_http_ok(ready_url, timeout_s, process)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def port_open(port: int) -> bool:
    """Something on 127.0.0.1 accepts connections on `port`."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def port_server_process(
    command: Sequence[str], port: int, *, name: str, env: Mapping[str, str], log: Path, timeout_s: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """A server with no readiness URL (a WebSocket-only peer): ready once `port` accepts connections; its
    output in `log`, whose end is in the error if it exits or does not listen within `timeout_s`; stopped
    (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(list(command), env=dict(env), stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + timeout_s
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start (exit code {process.poll()}):\n{tail}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class RunningStack:
    gateway_url: str
    """The gateway's HTTP base URL."""
    triton_http_url: str
    triton_grpc_url: str
    gateway_pid: int = 0
    """The gateway process (for profilers such as py-spy)."""
    triton_pid: int = 0
    gateway_grpc_target: str = ""
    """The gateway's gRPC address (host:port)."""


@contextlib.contextmanager
def gateway_stack(
    repository: Path,
    *,
    ready_path: str = "/health/ready",
    settings: Mapping[str, str] | None = None,
    triton_args: Sequence[str] = (),
) -> Iterator[RunningStack]:
    """The stack a benchmark measures: Triton on `repository` and the gateway process in front of it,
    both on free ports, stopped on exit. `settings`: more `SAMO_*` variables for the gateway;
    `triton_args`: more tritonserver flags (e.g. `--cache-config=local,size=...` for the response cache)."""
    from samo.triton.local_server import LocalTriton, TritonPorts

    ports = TritonPorts(free_port(), free_port(), free_port())
    gateway_port, gateway_grpc_port = free_port(), free_port()
    with LocalTriton(repository, ports=ports, extra_args=tuple(triton_args)) as triton:
        env = {
            "SAMO_PORT": str(gateway_port),
            "SAMO_GRPC_PORT": str(gateway_grpc_port),
            "SAMO_TRITON_GRPC_URL": triton.grpc_url,
            "SAMO_MODEL_REPOSITORY": str(repository),
            "SAMO_WORKERS": str(gateway_workers(beside_triton=True)),  # as `samo serve` runs it
            **(settings or {}),
        }
        base = f"http://127.0.0.1:{gateway_port}"
        with server_process(
            [sys.executable, "-m", "samo_cli", "gateway"], ready_url=base + ready_path, env=env
        ) as gateway:
            yield RunningStack(
                base,
                triton.http_url,
                triton.grpc_url,
                gateway.pid,
                triton.pid or 0,
                f"127.0.0.1:{gateway_grpc_port}",
            )
