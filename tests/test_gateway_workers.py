"""`samo gateway --workers N`: several processes share the HTTP and gRPC ports and answer alike."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.client import GrpcClient, HttpClient
from load_tests.processes import free_port, server_process
from samo.triton.local_server import LocalTriton
from tests.conftest import journal_corpus

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_two_workers_share_both_ports(triton: LocalTriton, serving_repository: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = {
        "SAMO_WORKERS": "2",
        "SAMO_PORT": str(port),
        "SAMO_GRPC_PORT": str(grpc_port),
        "SAMO_TRITON_GRPC_URL": triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(serving_repository),
        "SAMO_DEFAULT_SUMMARIZER": "extractive",
    }
    command = [sys.executable, "-m", "samo_cli", "gateway"]
    base = f"http://127.0.0.1:{port}"
    texts = journal_corpus()[:24]
    with server_process(command, ready_url=f"{base}/health/ready", env=env, timeout_s=180) as process:
        assert len(_children(process.pid)) >= 2, "uvicorn should run two worker processes"
        with HttpClient(base) as http, GrpcClient(f"127.0.0.1:{grpc_port}") as rpc:
            via_http = [http.detect_emotions([text]) for text in texts]
            via_grpc = [rpc.detect_emotions([text]) for text in texts]
    assert via_grpc == via_http
    assert len({result.results[0].labels for result in via_http}) > 1
