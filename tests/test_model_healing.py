"""Models that heal: SIGKILL a model's Python stub and the gateway reloads it in Triton.

Each test kills one model's stub in a Triton of its own (the session's is shared with other tests),
then checks what users see while it is down (503 with Retry-After, never 500; /health/models,
/health/ready and grpc.health.v1 name the model; the other models keep serving) and that the model
serves again within the target.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
import tritonclient.grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samo.triton.local_server import RestartPolicy
from tests.conftest import Stack, running_gateway
from tests.process_tree import stubs
from tests.speech import jfk_samples, wav_bytes

RECOVERY_TARGET_S = 10.0
"""The issue's target: serving again within 10 s of the kill (printed with each measured time)."""
HEALED_WITHIN_S = 60.0
"""What the test asserts: the model heals at all. Speed is not asserted on a shared 2-core machine."""
MODELS = ("emotion", "whisper", "whisper_onnx", "embedder", "tiny_t5", "tiny_t5_stream")
TEXT = "Work was hard today. But dinner with my sister made me so happy. I slept well."
CLIP = wav_bytes(jfk_samples()[: 3 * 16000])


def _transcribe(model: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda http: http.post(
        "/v1/transcribe",
        files={"file": ("clip.wav", CLIP, "audio/wav")},
        data={"model": model, "beam_size": "1"},
    )


def _summary_stream(http: httpx.Client) -> httpx.Response:
    body = {"texts": [TEXT], "model": "tiny_t5", "max_new_tokens": 4}
    response = http.post("/v1/summarize", json=body, headers={"accept": "text/event-stream"})
    if response.status_code == 200 and "event: summary" not in response.text:
        # An error after the stream started arrives as an `error` event in a 200 response.
        return httpx.Response(503 if "upstream_unavailable" in response.text else 500, text=response.text)
    return response


# One request per model that goes through that model, as a user would send it.
REQUESTS: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "emotion": lambda http: http.post("/v1/emotions", json={"texts": [TEXT]}),
    "whisper": _transcribe("whisper"),
    "whisper_onnx": _transcribe("whisper_onnx"),
    "embedder": lambda http: http.post("/v1/summarize", json={"texts": [TEXT], "model": "extractive"}),
    "tiny_t5": lambda http: http.post(
        "/v1/summarize", json={"texts": [TEXT], "model": "tiny_t5", "max_new_tokens": 4}
    ),
    "tiny_t5_stream": _summary_stream,
}


@pytest.fixture(scope="module")
def stack(
    serving_repository: Path, tmp_path_factory: pytest.TempPathFactory, gateway_stack
) -> Iterator[Stack]:
    repository = tmp_path_factory.mktemp("healing-repository")
    for name in MODELS:
        (repository / name).symlink_to(serving_repository / name)
    # Supervised, as `samo serve` runs it: a stub killed while it holds the Python backend's shared-memory
    # lock can abort tritonserver itself (see `_triton_aborted`), and then only a restart brings it back.
    with gateway_stack(
        repository,
        supervise=RestartPolicy(first_delay_s=0.5),
        default_summarizer="extractive",
        health_probe_interval_s=1.0,
    ) as running:
        yield running


@dataclass
class Observed:
    """What /health/models, /health/ready and grpc.health.v1 said about one model while it was down."""

    statuses: set[str] = field(default_factory=set)
    reasons: set[str] = field(default_factory=set)
    ready_codes: set[int] = field(default_factory=set)
    ready_reasons: set[str] = field(default_factory=set)
    grpc: set[int] = field(default_factory=set)


def _watch(stack: Stack, model: str, stop: threading.Event, observed: Observed) -> None:
    with (
        httpx.Client(base_url=stack.gateway.http_url, timeout=30) as http,
        grpc.insecure_channel(stack.gateway.grpc_target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            for state in http.get("/health/models").json()["models"]:
                if state["model"] == model:
                    observed.statuses.add(state["status"])
                    if state["reason"]:
                        observed.reasons.add(state["reason"])
            ready = http.get("/health/ready")
            observed.ready_codes.add(ready.status_code)
            if ready.status_code == 503:
                observed.ready_reasons.add(ready.json()["reason"])
            check = health.Check(health_pb2.HealthCheckRequest(service=f"samo.v1.Samo/{model}"), timeout=10)
            observed.grpc.add(check.status)
            time.sleep(0.05)


def _triton_aborted(stack: Stack, restarts_before: int) -> bool:
    """Whether tritonserver itself died and was restarted since `restarts_before`.

    Seen here in one full-suite run of several (2026-11-30, whisper_onnx): killing a stub in the middle
    of an execution aborted tritonserver with `boost::interprocess::lock_exception` thrown in the Python
    backend's TRITONBACKEND_ModelInstanceExecute, a crash also reported upstream
    (triton-inference-server/server#8882, open). No model reload can help then; the supervisor (`samo
    serve`, or the kubelet in Kubernetes) restarts the server, and every model serves again after it.
    """
    return stack.triton.restarts > restarts_before


def _wait_all_serving(http: httpx.Client, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http.get("/health/models").status_code == 200 and http.get("/health/ready").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"models not all serving: {http.get('/health/models').json()}")


@pytest.mark.parametrize("model", MODELS)
def test_a_killed_stub_is_reloaded_and_serves_again(stack: Stack, model: str) -> None:
    request = REQUESTS[model]
    other = REQUESTS["emotion" if model != "emotion" else "embedder"]
    with httpx.Client(base_url=stack.gateway.http_url, timeout=60) as http:
        _wait_all_serving(http)
        assert request(http).status_code == 200
        reloads_before = _reloads(http, model)
        restarts_before = stack.triton.restarts
        # Every instance's stub (Whisper runs two on the CPU): the model is dead, not half alive.
        killed_stubs = stubs(stack.triton.pid, model)
        assert killed_stubs

        observed = Observed()
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(stack, model, stop, observed), daemon=True)
        watcher.start()
        for stub in killed_stubs:
            os.kill(stub, signal.SIGKILL)
        killed = time.monotonic()
        codes = []
        other_codes = []
        try:
            while True:
                response = request(http)
                codes.append(response.status_code)
                if response.status_code == 200:
                    recovered_s = time.monotonic() - killed
                    break
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                assert response.json()["error"]["type"] == "upstream_unavailable"
                other_codes.append(other(http).status_code)
                assert time.monotonic() - killed < HEALED_WITHIN_S, f"{model} did not come back: {codes}"
            time.sleep(0.3)  # let the watcher see the last change before it stops
        finally:
            stop.set()
            watcher.join(timeout=30)

        if _triton_aborted(stack, restarts_before):
            print(
                f"\n{model}: the stub's death aborted tritonserver; serving again {recovered_s:.2f} s after "
                f"the kill, through the supervisor's restart (target {RECOVERY_TARGET_S:.0f} s)"
            )
            _wait_all_serving(http)
            return
        print(
            f"\n{model}: serving again {recovered_s:.2f} s after SIGKILL of its stub "
            f"(target {RECOVERY_TARGET_S:.0f} s); {len(codes) - 1} requests answered 503 meanwhile"
        )
        assert 503 in codes, "the first request after the kill meets the dead stub"
        assert set(other_codes) <= {200}, "the other models keep serving"
        assert observed.statuses & {"failing", "reloading"}, observed
        assert 503 in observed.ready_codes and any(model in reason for reason in observed.ready_reasons)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in observed.grpc
        _wait_all_serving(http)
        assert _reloads(http, model) == reloads_before + 1
        assert stubs(stack.triton.pid, model) and not set(killed_stubs) & set(stubs(stack.triton.pid, model))


def test_a_stub_killed_without_traffic_is_found_by_the_probes(stack: Stack) -> None:
    """No request meets the dead stub: the periodic probe finds it and the model is reloaded."""
    with httpx.Client(base_url=stack.gateway.http_url, timeout=60) as http:
        _wait_all_serving(http)
        reloads_before = _reloads(http, "emotion")
        restarts_before = stack.triton.restarts
        [stub] = stubs(stack.triton.pid, "emotion")
        os.kill(stub, signal.SIGKILL)
        killed = time.monotonic()
        while _reloads(http, "emotion") == reloads_before and not _triton_aborted(stack, restarts_before):
            assert time.monotonic() - killed < HEALED_WITHIN_S, http.get("/health/models").json()
            time.sleep(0.1)
        print(f"\nemotion reloaded {time.monotonic() - killed:.2f} s after the kill, found by probes alone")
        _wait_all_serving(http)
        assert REQUESTS["emotion"](http).status_code == 200


def test_a_slow_model_stays_ready_and_is_never_reloaded(stack: Stack, make_gateway_settings) -> None:
    """Probes that time out (here: a timeout no inference can meet) mark models `slow`, not failing:
    still ready, and none is reloaded, since reloading a busy model would turn slowness into an outage."""
    before = {model: stubs(stack.triton.pid, model) for model in MODELS}
    settings = make_gateway_settings(
        stack.triton,
        default_summarizer="extractive",
        health_probe_interval_s=0.2,
        health_probe_timeout_s=0.001,
    )
    with running_gateway(settings) as gateway, httpx.Client(base_url=gateway.http_url, timeout=60) as http:
        rounds = set()
        deadline = time.monotonic() + HEALED_WITHIN_S
        while len(rounds) < 5:  # several rounds, each of which could have reloaded them
            assert time.monotonic() < deadline, http.get("/health/models").json()
            report = http.get("/health/models")
            assert report.status_code == 200, report.json()
            states = {state["model"]: state for state in report.json()["models"]}
            assert {state["status"] for state in states.values()} == {"slow"}, states
            assert {state["reloads"] for state in states.values()} == {0}, states
            assert "did not answer its probe within 0.001 s" in states["emotion"]["reason"]
            rounds.add(states["emotion"]["checked_at"])
            time.sleep(0.1)
        assert http.get("/health/ready").json() == {"status": "ready"}
        assert REQUESTS["emotion"](http).status_code == 200
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="samo.v1.Samo/emotion"), timeout=10
            )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert {model: stubs(stack.triton.pid, model) for model in MODELS} == before, "a model was reloaded"


def test_a_model_unloaded_in_triton_answers_503_and_is_loaded_again(stack: Stack) -> None:
    """A model Triton has not loaded is the upstream's fault (503 with Retry-After, not 404), and the
    monitor loads it again."""
    with httpx.Client(base_url=stack.gateway.http_url, timeout=60) as http:
        _wait_all_serving(http)
        reloads_before = _reloads(http, "embedder")
        with tritonclient.grpc.InferenceServerClient(stack.triton.grpc_url) as control:
            control.unload_model("embedder")
            while control.is_model_ready("embedder"):
                time.sleep(0.05)
        unloaded = time.monotonic()
        codes = []
        while (response := REQUESTS["embedder"](http)).status_code != 200:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            codes.append(response.status_code)
            assert time.monotonic() - unloaded < HEALED_WITHIN_S, codes
        assert codes, "the first request after the unload finds the model missing"
        print(f"\nembedder: loaded again {time.monotonic() - unloaded:.2f} s after it was unloaded")
        _wait_all_serving(http)
        assert _reloads(http, "embedder") == reloads_before + 1


def _reloads(http: httpx.Client, model: str) -> int:
    return next(
        state["reloads"] for state in http.get("/health/models").json()["models"] if state["model"] == model
    )
