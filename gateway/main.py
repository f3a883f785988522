"""Runs the gateway under uvicorn, in one process or in several that share the ports."""

from __future__ import annotations

import json
import os

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from pydantic_settings import NoDecode

from gateway.batches.child import runner_process
from gateway.http.app import create_app
from gateway.observability.logging import configure_logging, logging_config
from gateway.observability.metrics import shared_across_workers
from samo.cpus import gateway_workers
from samo.settings import GatewaySettings

ENV_PREFIX = "SAMO_"


def create_app_from_environment() -> FastAPI:
    """The app factory each worker process calls: its settings come from `SAMO_*` variables."""
    return create_app(settings=GatewaySettings())


def _environment_value(value: object, *, comma_separated: bool) -> str:
    """As the settings read it back: comma-separated for the fields that say so (`NoDecode`: CORS
    origins), JSON for every other list or mapping (e.g. the OIDC issuers), plain text otherwise."""
    if isinstance(value, (list, tuple)) and comma_separated:
        return ",".join(map(str, value))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def settings_environment(settings: GatewaySettings) -> dict[str, str]:
    """`settings` as `SAMO_*` variables, as a new interpreter reads them back. Secrets go as their
    values (a JSON dump masks them as `**********`, which the workers would read)."""
    fields = GatewaySettings.model_fields
    values = settings.model_dump(mode="json")
    for name in fields:
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            values[name] = secret.get_secret_value()
    return {
        f"{ENV_PREFIX}{name.upper()}": _environment_value(
            value, comma_separated=any(item is NoDecode for item in fields[name].metadata)
        )
        for name, value in values.items()
        if value is not None
    }


def _settings_to_environment(settings: GatewaySettings) -> None:
    """Workers are new interpreters: they read this process's settings back from the environment."""
    os.environ.update(settings_environment(settings))


def run_gateway(settings: GatewaySettings) -> None:
    """The gateway; with the embedded batch store and `batch_runner_process`, its batch lines in a
    niced process of their own beside it (gateway.batches.child)."""
    configure_logging(settings.log_format, settings.log_level)
    if settings.database_url is not None or not settings.batch_worker or not settings.batch_runner_process:
        _run_gateway(settings)
        return
    environment = {**os.environ, **settings_environment(settings)}
    with runner_process(
        settings.batch_dir, settings.batch_runner_nice, settings.batch_runner_concurrency, environment
    ):
        _run_gateway(settings.model_copy(update={"batch_worker": False}))


def _run_gateway(settings: GatewaySettings) -> None:
    # No access log: request lines are noise at load, and the metrics endpoint counts requests
    # (SAMO_LOG_LEVEL=DEBUG logs one line per request, with its ID).
    # One logging config, applied here and by uvicorn in every worker it spawns.
    configure_logging(settings.log_format, settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_s,
        "log_config": logging_config(settings.log_format, settings.log_level),
        "log_level": settings.log_level.lower(),
        # TLS when the settings give a certificate; gRPC uses the same pair (gateway/grpc_api/server.py).
        "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key,
        # On SIGTERM: listeners close at once and requests in progress get this long; then the
        # lifespan stops gRPC (draining since the signal, gateway/shutdown.py) and the process exits.
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }
    workers = settings.workers or gateway_workers(beside_triton=False)
    if workers == 1:
        uvicorn.run(create_app(settings=settings), **common)
        return
    # uvicorn binds the HTTP socket once and its workers share it; each worker starts its own gRPC
    # server on the same port (gRPC sets SO_REUSEPORT on Linux, so the kernel spreads connections).
    _settings_to_environment(settings)
    # Each worker writes its metrics to one shared folder, so a scrape of any worker counts them all.
    with shared_across_workers():
        uvicorn.run("gateway.main:create_app_from_environment", factory=True, workers=workers, **common)
