"""A server that supervises: Triton restarted when it dies, nothing left behind when `samo serve`
dies, and a gateway that drains on SIGTERM.

Each test runs servers of its own (the session's are shared with other tests), since it kills them;
they serve the session's exports of the two models.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.client import GrpcClient
from gateway.errors import ErrorType, SamoError
from load_tests.processes import free_port, wait_http_ok
from samo.triton.local_server import SHARED_MEMORY, LocalTriton, RestartPolicy, TritonPorts
from tests.process_tree import alive, children, cmdline, port_free, stubs
from tests.speech import long_speech, wav_bytes

TEXT = "I finally finished the project and I feel so proud of us."
HANG_S = 60.0
"""A request not answered within this hangs (the deadline under test is 3 s)."""
GONE_WITHIN_S = 30.0
"""How long the test waits for killed processes to go: a bound, not a speed measurement."""


@pytest.fixture(scope="module")
def repository(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default emotion model and Whisper tiny.en (CTranslate2): both ship with the packages."""
    repository = tmp_path_factory.mktemp("supervision-repository")
    for name in ("emotion", "whisper"):
        (repository / name).symlink_to(serving_repository / name)
    return repository


def instances(repository: Path) -> int:
    """Model instances the repository's configs ask for: one Python stub each."""
    return sum(
        int(count)
        for config in repository.glob("*/config.pbtxt")
        for count in re.findall(r"\bcount: (\d+)", config.read_text())
    )


def _ports() -> TritonPorts:
    return TritonPorts(free_port(), free_port(), free_port())


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while any(alive(pid) for pid in pids):
        left = [(pid, cmdline(pid)[:80]) for pid in pids if alive(pid)]
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.1)


def test_triton_is_restarted_and_the_gateway_reconnects(repository: Path, gateway_stack) -> None:
    supervised = RestartPolicy(first_delay_s=0.5)
    with gateway_stack(repository, supervise=supervised, health_probe_interval_s=1.0) as stack:
        triton, gateway = stack.triton, stack.gateway
        with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
            wait_http_ok(f"{gateway.http_url}/health/ready", 120)
            first, first_stubs = triton.pid, stubs(triton.pid)
            assert first is not None and first_stubs
            os.kill(first, signal.SIGKILL)
            killed = time.monotonic()
            codes = []
            while True:
                response = http.post("/v1/emotions", json={"texts": [TEXT]})
                codes.append(response.status_code)
                if response.status_code == 200:
                    break
                assert response.status_code == 503 and response.headers["retry-after"], response.text
                assert time.monotonic() - killed < 120, f"no answer after the restart: {codes}"
                time.sleep(0.05)
            print(f"\ntritonserver SIGKILL: gateway serving again after {time.monotonic() - killed:.2f} s")
            # The supervisor counts the restart once the whole server is ready (polled every 0.1 s); the
            # emotion model can answer before the other models have loaded.
            counted = time.monotonic() + 60
            while triton.restarts < 1 and time.monotonic() < counted:
                time.sleep(0.05)
            assert triton.restarts == 1 and triton.pid != first
            _wait_gone(first_stubs)
            wait_http_ok(f"{gateway.http_url}/health/ready", 60)
    assert all(port_free(port) for port in (triton.ports.http, triton.ports.grpc, triton.ports.metrics))


def test_a_frozen_triton_gives_deadline_errors_not_hangs(repository: Path, gateway_stack) -> None:
    """SIGSTOP leaves Triton's sockets open and silent: the request's deadline must answer, on both
    transports, and the gateway must stay up and serve again once Triton runs."""
    with gateway_stack(
        repository,
        triton_timeout_s=3.0,
        deadline_s_per_unit=0.0,
        # No probe during the freeze: a reload would also wait on the frozen server.
        health_probe_interval_s=3600.0,
    ) as stack:
        triton, gateway = stack.triton, stack.gateway
        with httpx.Client(base_url=gateway.http_url, timeout=HANG_S) as http:
            assert http.post("/v1/emotions", json={"texts": [TEXT]}).status_code == 200
            assert triton.pid is not None
            os.kill(triton.pid, signal.SIGSTOP)
            try:
                response = http.post("/v1/emotions", json={"texts": [TEXT]})
                assert response.status_code == 504, response.text
                assert response.json()["error"]["type"] == "deadline_exceeded"
                with GrpcClient(gateway.grpc_target) as client, pytest.raises(SamoError) as raised:
                    client.detect_emotions([TEXT])
                assert raised.value.type is ErrorType.DEADLINE_EXCEEDED
                assert http.get("/health/live").status_code == 200
            finally:
                os.kill(triton.pid, signal.SIGCONT)
            assert http.post("/v1/emotions", json={"texts": [TEXT]}).status_code == 200


def _regions(triton: LocalTriton) -> list[Path]:
    return sorted(SHARED_MEMORY.glob(f"{triton.shm_prefix}*"))


def test_a_killed_server_leaves_no_shared_memory_behind(repository: Path, local_triton) -> None:
    """A tritonserver killed outright never removes its stubs' /dev/shm regions; a restart and a stop do."""
    with local_triton(repository, supervise=RestartPolicy(first_delay_s=0.2)) as triton:
        first = _regions(triton)
        assert first, "the Python backend's regions carry the server's prefix"
        pid = triton.pid
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        deadline = time.monotonic() + 120
        while triton.restarts == 0:
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.1)
        assert not set(first) & set(_regions(triton)), "the dead server's regions are removed"
        assert _regions(triton), "the new server has its own"
    assert _regions(triton) == []


def test_killing_samo_serve_leaves_no_triton_behind(repository: Path, samo_process) -> None:
    port, grpc_port, ports = free_port(), free_port(), _ports()
    command = [
        *("serve", "--repository", str(repository)),
        *("--port", str(port), "--grpc-port", str(grpc_port)),
        *("--triton-http-port", str(ports.http), "--triton-grpc-port", str(ports.grpc)),
        *("--triton-metrics-port", str(ports.metrics)),
    ]
    server: list[int] = []
    try:
        with samo_process(*command, port=port, grpc_port=grpc_port, timeout_s=180) as serve:
            server = [pid for pid in children(serve.pid) if "tritonserver" in cmdline(pid)]
            assert len(server) == 1
            stub_pids = stubs(server[0])
            assert len(stub_pids) == instances(repository)
            serve.process.kill()
            serve.process.wait()
            _wait_gone([*server, *stub_pids])
            assert all(port_free(p) for p in (ports.http, ports.grpc, ports.metrics))
    finally:
        for pid in server:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _in_flight(base: str) -> dict[str, float]:
    """Requests in progress by transport, from the gateway's own gauge (less the scrape itself)."""
    text = httpx.get(f"{base}/metrics").text
    counts = {
        sample.labels["transport"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "samo_inflight_requests"
        for sample in family.samples
    }
    counts["http"] = counts.get("http", 1.0) - 1
    return counts


def test_sigterm_lets_requests_in_progress_finish(repository: Path, local_triton, samo_process) -> None:
    grace_s = 120.0
    audio = wav_bytes(long_speech(repeats=4))  # about 50 s of speech: seconds of work in flight
    with local_triton(repository) as triton:
        env = {
            "SAMO_TRITON_GRPC_URL": triton.grpc_url,
            "SAMO_MODEL_REPOSITORY": str(repository),
            "SAMO_SHUTDOWN_GRACE_S": str(grace_s),
        }
        with samo_process("gateway", env=env) as gateway, ThreadPoolExecutor(2) as pool:
            base = gateway.http_url
            over_http = pool.submit(
                httpx.post,
                f"{base}/v1/transcribe",
                files={"file": ("entry.wav", audio, "audio/wav")},
                data={"beam_size": "1"},
                timeout=grace_s,
            )
            with GrpcClient(gateway.grpc_target, timeout_s=grace_s) as rpc:
                over_grpc = pool.submit(rpc.transcribe, audio, beam_size=1)
                deadline = time.monotonic() + 60
                while not (counts := _in_flight(base)).get("http") or not counts.get("grpc"):
                    assert time.monotonic() < deadline, counts
                    time.sleep(0.05)
                assert not over_http.done() and not over_grpc.done()
                gateway.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()

                refused = None
                while refused is None:
                    try:
                        answer = httpx.post(f"{base}/v1/emotions", json={"texts": [TEXT]}, timeout=10)
                    except httpx.TransportError:
                        refused = "connection refused"
                    else:
                        if answer.status_code == 503:
                            assert answer.json()["error"]["type"] == "upstream_unavailable"
                            refused = "503"
                    assert time.monotonic() - signalled < grace_s, "new requests still served"
                    time.sleep(0.05)

                transcript = over_http.result()
                assert transcript.status_code == 200, transcript.text
                assert "country" in transcript.json()["text"]
                assert "country" in over_grpc.result().text
            code = gateway.process.wait(timeout=grace_s)
            print(
                f"\nSIGTERM: new requests refused ({refused}); requests in progress finished; "
                f"exited {time.monotonic() - signalled:.1f} s after the signal (grace {grace_s:.0f} s)"
            )
            # uvicorn re-raises the SIGTERM it handled once it has shut down, so the exit is by that signal.
            assert code in (0, -signal.SIGTERM)
