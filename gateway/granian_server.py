"""The gateway under Granian (`SAMO_HTTP_SERVER=granian`): Rust's hyper parses HTTP and the app runs on
uvloop in each worker process, where uvicorn parses it in Python (httptools).

What uvicorn gives the gateway, kept here: keep-alive for `keep_alive_s` (hyper's header-read timeout,
which is the idle wait for a connection's next request), TLS from the same certificate pair (TLS 1.2 and
up, as uvicorn), no access log, our log format, one gRPC server per worker on the shared port, /metrics
summed across workers, and on SIGTERM the shutdown hook (gateway/shutdown.py) then `shutdown_grace_s`
for requests in progress. Body limits are the app's own (gateway/http/body_limit.py), under any server.
"""

from __future__ import annotations

from pathlib import Path

from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from gateway.observability.logging import logging_config
from samo.settings import GatewaySettings

FACTORY = "gateway.main:create_app_from_environment"


def serve_with_granian(settings: GatewaySettings, workers: int) -> None:
    """Blocks until the server stops. Workers are new interpreters: the caller has put the settings in
    the environment, where `FACTORY` reads them back."""
    server = Server(
        FACTORY,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.keep_alive_s * 1000)),
        backlog=2048,
        log_access=False,
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=logging_config(settings.log_format, settings.log_level),
        ssl_cert=Path(settings.tls_cert) if settings.tls_cert else None,
        ssl_key=Path(settings.tls_key) if settings.tls_key else None,
        ssl_protocol_min=SSLProtocols.tls12,
        workers_kill_timeout=int(settings.shutdown_grace_s) + 1,
    )
    server.serve()
