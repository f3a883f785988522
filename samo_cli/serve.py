"""`samo triton`, `samo gateway` and `samo serve`: run the local tritonserver, the gateway, or both."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from samo_cli.common import RepositoryOption, fail, setup_logging


def triton_command(
    repository: RepositoryOption = Path("model_repository"),
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
) -> None:
    """Run the local tritonserver (from the nvidia-pytriton wheel) until Ctrl-C."""
    setup_logging()
    from samo.triton.local_server import LocalTriton, TritonPorts, TritonStartError

    server = LocalTriton(repository, host=host, ports=TritonPorts(http_port, grpc_port, metrics_port))
    try:
        server.start()
    except TritonStartError as exc:
        raise fail(str(exc)) from exc
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    raise typer.Exit(code)


def gateway_command(
    host: Annotated[str | None, typer.Option(help="Default: SAMO_HOST or 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SAMO_PORT or 8080.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Default: SAMO_GRPC_PORT or 50051.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes sharing the ports. Default: SAMO_WORKERS, else one per usable core."),
    ] = None,
) -> None:
    """Run the gateway, HTTP and gRPC (Triton must be reachable at SAMO_TRITON_GRPC_URL)."""
    setup_logging()
    from gateway.main import run_gateway
    from samo.settings import GatewaySettings

    given = {"host": host, "port": port, "grpc_port": grpc_port, "workers": workers}
    overrides = {k: v for k, v in given.items() if v is not None}
    run_gateway(GatewaySettings(**overrides))


def worker_command() -> None:
    """Run batch lines from the shared queue (PostgreSQL: SAMO_DATABASE_URL), without serving HTTP or
    gRPC; SIGTERM stops it (lines in progress are run again by another worker)."""
    setup_logging()
    from gateway.worker import run_worker
    from samo.settings import GatewaySettings

    run_worker(GatewaySettings())


def serve_command(
    repository: RepositoryOption = Path("model_repository"),
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Gateway HTTP port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="Gateway gRPC (samo.v1) port.")] = 50051,
    triton_http_port: int = 8000,
    triton_grpc_port: int = 8001,
    triton_metrics_port: int = 8002,
    response_cache_mb: Annotated[
        int,
        typer.Option(
            min=0,
            help="Triton's response cache, MB (0: none); models exported with --response-cache use it.",
        ),
    ] = 0,
) -> None:
    """Triton and the gateway together in the foreground; Ctrl-C stops both."""
    setup_logging()
    from gateway.main import run_gateway
    from samo.cpus import gateway_workers
    from samo.settings import GatewaySettings
    from samo.triton.local_server import LocalTriton, TritonPorts, TritonStartError, response_cache_args

    ports = TritonPorts(triton_http_port, triton_grpc_port, triton_metrics_port)
    cache = response_cache_args(response_cache_mb << 20) if response_cache_mb else ()
    server = LocalTriton(repository, host=host, ports=ports, extra_args=cache)
    # SIGTERM stops both the way Ctrl-C does (while the gateway runs, uvicorn handles both itself).
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        # Triton is restarted (with backoff) if it exits on its own, and dies if this process does.
        server.supervise()
        settings = GatewaySettings(
            host=host,
            port=port,
            grpc_port=grpc_port,
            triton_grpc_url=server.grpc_url,
            model_repository=repository,
        )
        if not settings.workers:  # Triton runs on the same cores
            settings = settings.model_copy(update={"workers": gateway_workers(beside_triton=True)})
        base = f"http://{host}:{port}"
        typer.echo(
            f"\nSAMO gateway  {base}  (docs {base}/docs), gRPC samo.v1 {host}:{grpc_port}\n"
            f"Triton        http {server.http_url}, grpc {server.grpc_url}, metrics {server.metrics_url}\n"
            f"Try:\n  curl -s {base}/v1/emotions -H 'content-type: application/json' "
            """-d '{"texts": ["I finally finished the project and I feel so proud of us."]}'\n"""
        )
        run_gateway(settings)
    except TritonStartError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM before the gateway started
    finally:
        server.stop()
