"""`samo gateway --workers N`: several processes share the HTTP and gRPC ports and answer alike."""

from __future__ import annotations

from pathlib import Path

from gateway.client import GrpcClient, HttpClient
from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, journal_corpus


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_two_workers_share_both_ports(triton: LocalTriton, serving_repository: Path, samo_process) -> None:
    env: dict[str, str | None] = {
        "SAMO_WORKERS": "2",
        "SAMO_TRITON_GRPC_URL": triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(serving_repository),
        "SAMO_DEFAULT_SUMMARIZER": "extractive",
        "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),  # each worker probes every model
    }
    texts = journal_corpus()[:24]
    with samo_process("gateway", env=env, timeout_s=180) as gateway:
        assert len(_children(gateway.pid)) >= 2, "uvicorn should run two worker processes"
        with HttpClient(gateway.http_url) as http, GrpcClient(gateway.grpc_target) as rpc:
            via_http = [http.detect_emotions([text]) for text in texts]
            via_grpc = [rpc.detect_emotions([text]) for text in texts]
    assert via_grpc == via_http
    assert len({result.results[0].labels for result in via_http}) > 1
