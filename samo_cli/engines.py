"""`samo build-engines`: build the TensorRT engines of a repository's text encoders before serving.

Starts Triton on the repository with only the text encoders loaded (or uses a running one, `--url`),
sends every shape the gateway can send (`samo.triton.engine_build`), verifies the answers and that
the engine cache holds still, and stops. On a GPU node (a Kubernetes Job, compose's `build-engines`
service) it runs the serving image's own `tritonserver`, so the engines are built by the TensorRT that
serves them and land in the persistent cache volume. Without a GPU it runs the same shapes on the CPU
models, with the local tritonserver from the nvidia-pytriton wheel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from samo.free_ports import free_port

CONTAINER_TRITONSERVER = Path("/opt/tritonserver/bin/tritonserver")


# The Triton image runs this module alone (`python3 -m samo_cli.engines`, deploy/samo.sh): it has the
# samo core, typer and tritonclient, not the gateway or export roles, so nothing here imports
# samo_cli.common (which brings the gateway's logging).
def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("samo").setLevel(logging.INFO)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {process.returncode} before it was ready")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"tritonserver not ready after {timeout_s:.0f} s (engines may still be building)")


@contextlib.contextmanager
def _container_server(binary: Path, repository: Path, models: list[str], timeout_s: float) -> Iterator[str]:
    """The image's own tritonserver (NVIDIA's backends, its TensorRT) on a free loopback port."""
    port = free_port()
    command = [
        str(binary),
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        "--http-address=127.0.0.1",
        f"--http-port={port}",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--strict-readiness=true",
        "--disable-auto-complete-config",
    ]
    process = subprocess.Popen(command, start_new_session=True)
    try:
        url = f"127.0.0.1:{port}"
        _wait_ready(url, process, timeout_s)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def _local_server(repository: Path, timeout_s: float) -> Iterator[str]:
    """The nvidia-pytriton wheel's tritonserver (`samo triton`'s), on free loopback ports."""
    from samo.triton.local_server import LocalTriton, TritonPorts

    # It loads the whole repository (LocalTriton's own explicit mode loads every model at start).
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    server = LocalTriton(repository, ports=ports)
    server.start(timeout_s=timeout_s)
    try:
        yield server.http_url
    finally:
        server.stop()


def build_engines_command(
    repository: Annotated[Path, typer.Option(help="Triton model repository folder.")] = Path("/models"),
    url: Annotated[
        str | None,
        typer.Option(help="HTTP address (host:port) of a running Triton that serves the repository."),
    ] = None,
    tritonserver: Annotated[
        Path | None,
        typer.Option(
            help="tritonserver binary to start. Default: the image's own "
            f"({CONTAINER_TRITONSERVER}, or `tritonserver` on PATH), else the nvidia-pytriton wheel's."
        ),
    ] = None,
    start_timeout_s: Annotated[
        float, typer.Option(help="Seconds to wait for Triton to load the models (engines build then).")
    ] = 1800.0,
) -> None:
    """Send every shape the gateway can send to each text encoder, so that TensorRT writes its engines to
    the cache before serving; verify the answers and that no shape needs another engine."""
    _setup_logging()
    from samo.triton.engine_build import EngineBuildError, build_engines, text_encoders

    models = text_encoders(repository)
    if not models:
        raise _fail(f"{repository} holds no text encoder (no samo.json with task emotion or embedding)")
    names = [model.name for model in models]
    if url is not None:
        server = contextlib.nullcontext(url)
    else:
        binary = tritonserver or (
            CONTAINER_TRITONSERVER if CONTAINER_TRITONSERVER.exists() else shutil.which("tritonserver")
        )
        if binary is not None:
            server = _container_server(Path(binary), repository.resolve(), names, start_timeout_s)
        else:
            server = _local_server(repository, start_timeout_s)

    import tritonclient.http as httpclient

    try:
        with server as address:
            client = httpclient.InferenceServerClient(address, network_timeout=start_timeout_s)
            try:
                reports = build_engines(client, models, progress=typer.echo)
            finally:
                client.close()
    except (EngineBuildError, RuntimeError) as exc:
        raise _fail(str(exc)) from exc
    for report in reports:
        where = report.cache_path or "no TensorRT cache (CPU model)"
        typer.echo(
            f"{report.name}: every shape answered; engines in {where}: {len(report.engine_files)} file(s)"
        )


if __name__ == "__main__":
    typer.run(build_engines_command)
