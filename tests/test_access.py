"""Access to the gateway, over real HTTP and gRPC: API keys, rate limits (memory and a real Redis),
TLS with a certificate made here, CORS."""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import signal
import ssl
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.client import GrpcClient, HttpClient
from gateway.errors import ErrorType, SamoError
from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from gateway.security import api_keys as api_keys_module
from gateway.security.api_keys import ApiKeys, KeyFileError, parse_key_file
from load_tests.processes import free_port
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, Gateway, SamoProcess, gateway_settings, running_gateway
from tests.local_services import running_redis, wait_until

TEXT = {"texts": ["I finally finished the project and I feel so proud of us."]}
ORIGIN = "https://journal.example"
KEY_NAMES = ("alice", "bob", "carol", "dave")


def _keys() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in KEY_NAMES}


def _write_keys(path: Path, keys: dict[str, str]) -> None:
    path.write_text("# name:key\n" + "".join(f"{name}:{key}\n" for name, key in keys.items()))


def _settings(triton: LocalTriton, repository: Path, **access: object) -> GatewaySettings:
    return gateway_settings(
        triton,
        model_repository=repository,
        default_summarizer="extractive",
        health_probe_interval_s=QUIET_PROBES_S,  # several of these gateways run at once, all module long
        **access,
    )


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _silence_wav(seconds: float) -> bytes:
    """Silent 16 kHz audio: the VAD finds no speech, so it costs the limiter seconds and Triton nothing."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * int(16_000 * seconds))
    return buffer.getvalue()


def _grpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _detect(target: str, metadata: tuple[tuple[str, str], ...] | None = None) -> object:
    with grpc.insecure_channel(target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        return stub.DetectEmotions(
            samo_v1_pb2.DetectEmotionsRequest(texts=TEXT["texts"]), timeout=30, metadata=metadata
        )


# Key files.


def test_key_file_parses_names_and_refuses_bad_lines_without_quoting_keys() -> None:
    keys = _keys()
    assert set(parse_key_file("\n# comment\n" + "\n".join(f" {n} : {k} " for n, k in keys.items()))) == set(
        keys
    )
    secret = keys["alice"]
    for text in (
        f"no separator {secret}",
        f"bad name!:{secret}",
        "alice:short",
        f"a:{secret}\na:{secret}x",
        f"a:{secret}\nb:{secret}",
    ):
        with pytest.raises(KeyFileError) as caught:
            parse_key_file(text)
        assert secret not in str(caught.value)
        assert "line" in str(caught.value)


@pytest.mark.parametrize("caught", ["", "cut off mid-key"])
def test_a_key_file_caught_while_it_is_written_in_place_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caught: str
) -> None:
    keys = _keys()
    path = tmp_path / "keys"
    path.write_text(f"alice:{keys['alice']}\n")
    api_keys = ApiKeys(path)
    whole = f"alice:{keys['alice']}\nbob:{keys['bob']}\n"
    # The poll reads the file truncated, or with bob's key cut to 20 characters (it parses), and the
    # writer finishes while the poll waits to read it again.
    path.write_text("" if not caught else whole[: whole.index("bob:") + 4 + 20])
    monkeypatch.setattr(api_keys_module.time, "sleep", lambda seconds: path.write_text(whole))
    assert api_keys.reload(settle_s=0.2) is False
    assert api_keys.names == ("alice",)
    assert api_keys.reload(settle_s=0.2) is True
    assert api_keys.names == ("alice", "bob") and api_keys.name_for(keys["bob"]) == "bob"


# A gateway with API keys (and CORS for one origin).


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return _keys()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str]) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    _write_keys(path, {name: keys[name] for name in ("alice", "bob")})
    return path


@pytest.fixture(scope="module")
def keyed(triton: LocalTriton, serving_repository: Path, key_file: Path) -> Iterator[Gateway]:
    settings = _settings(
        triton,
        serving_repository,
        api_keys_file=key_file,
        api_keys_reload_s=0.2,
        cors_allow_origins=(ORIGIN,),
    )
    with running_gateway(settings) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/emotions"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs")],
)
def test_http_without_a_key_is_401_with_www_authenticate(keyed: Gateway, method: str, path: str) -> None:
    response = httpx.request(method, keyed.http_url + path, json=TEXT if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "unauthenticated"
    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer not-a-key-at-all-0000"},
        {"x-api-key": "not-a-key-at-all-0000"},
        {"authorization": "Basic YWxpY2U6cGFzcw=="},
        {"authorization": "Bearer"},
    ],
)
def test_http_with_a_wrong_key_is_401(keyed: Gateway, keys: dict[str, str], headers: dict[str, str]) -> None:
    response = httpx.post(keyed.http_url + "/v1/emotions", json=TEXT, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "unauthenticated"
    assert response.json()["error"]["message"] in (
        "the API key is not valid",
        "authorization: expected `Bearer <key>`",
    )


def test_http_accepts_bearer_and_x_api_key(keyed: Gateway, keys: dict[str, str]) -> None:
    # A well-formed key the file does not hold is refused (the gateway knows only alice and bob).
    assert (
        httpx.post(keyed.http_url + "/v1/emotions", json=TEXT, headers=_bearer(keys["carol"])).status_code
        == 401
    )
    for headers in (
        _bearer(keys["alice"]),
        {"x-api-key": keys["bob"]},
        {"authorization": f"bearer {keys['alice']}"},
    ):
        response = httpx.post(keyed.http_url + "/v1/emotions", json=TEXT, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["scores"]


def test_health_needs_no_key(keyed: Gateway) -> None:
    assert httpx.get(keyed.http_url + "/health/live").status_code == 200
    ready = httpx.get(keyed.http_url + "/health/ready", timeout=30)
    assert ready.status_code in (200, 503)  # answered, not refused
    assert ready.json()["status"] in ("ready", "not ready")


def test_typed_clients_send_the_key(keyed: Gateway, keys: dict[str, str]) -> None:
    with (
        HttpClient(keyed.http_url, api_key=keys["alice"]) as http,
        GrpcClient(keyed.grpc_target, api_key=keys["bob"]) as rpc,
    ):
        assert http.detect_emotions(TEXT["texts"]) == rpc.detect_emotions(TEXT["texts"])
    for client in (
        HttpClient(keyed.http_url),
        GrpcClient(keyed.grpc_target, api_key="not-a-key-at-all-0000"),
    ):
        with client, pytest.raises(SamoError) as caught:
            client.detect_emotions(TEXT["texts"])
        assert caught.value.type is ErrorType.UNAUTHENTICATED


def test_grpc_needs_a_key_except_for_health(keyed: Gateway, keys: dict[str, str]) -> None:
    for metadata in (
        None,
        (("authorization", "Bearer not-a-key-at-all-0000"),),
        (("authorization", keys["alice"]),),
    ):
        error = _grpc_error(lambda metadata=metadata: _detect(keyed.grpc_target, metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert dict(error.trailing_metadata())["samo-error-type"] == "unauthenticated"
    assert _detect(keyed.grpc_target, (("authorization", f"Bearer {keys['alice']}"),)).results
    assert _detect(keyed.grpc_target, (("x-api-key", keys["bob"]),)).results
    with grpc.insecure_channel(keyed.grpc_target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


def test_grpc_streams_and_reflection_need_a_key(keyed: Gateway, keys: dict[str, str]) -> None:
    request = samo_v1_pb2.AnalyzeJournalRequest(text=TEXT["texts"][0])
    with grpc.insecure_channel(keyed.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        error = _grpc_error(lambda: list(stub.StreamJournal(request, timeout=30)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        events = list(stub.StreamJournal(request, timeout=30, metadata=tuple(_bearer(keys["alice"]).items())))
        assert events[-1].HasField("analysis")

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        error = _grpc_error(lambda: list(reflection.ServerReflectionInfo(iter([ask]), timeout=10)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            reflection.ServerReflectionInfo(
                iter([ask]), timeout=10, metadata=tuple(_bearer(keys["bob"]).items())
            )
        )
        assert "samo.v1.Samo" in {s.name for s in answers[0].list_services_response.service}


def test_key_file_reload_on_change_and_bad_files_keep_the_keys(
    keyed: Gateway, keys: dict[str, str], key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def status(name: str) -> int:
        return httpx.get(keyed.http_url + "/openapi.json", headers=_bearer(keys[name])).status_code

    original = key_file.read_text()
    try:
        assert status("carol") == 401
        _write_keys(key_file, {"carol": keys["carol"], "bob": keys["bob"]})
        assert wait_until(lambda: status("carol") == 200)
        assert status("alice") == 401
        # A broken file is not loaded: the keys before it stay, and the log names the line, not the key.
        with caplog.at_level(logging.INFO):
            key_file.write_text(f"carol:{keys['carol']}\nbroken {keys['dave']}\n")
            assert wait_until(lambda: "not reloaded" in caplog.text)
        assert "line 2" in caplog.text
        assert keys["dave"] not in caplog.text
        assert status("carol") == 200
        assert status("bob") == 200
    finally:
        key_file.write_text(original)
        assert wait_until(lambda: status("alice") == 200)


def test_keys_never_appear_in_logs_errors_or_metrics(
    keyed: Gateway, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "zz-" + keys["alice"][::-1]
    with caplog.at_level(logging.DEBUG):
        seen = [
            httpx.post(keyed.http_url + "/v1/emotions", json=TEXT, headers=headers, timeout=30)
            for headers in (
                _bearer(keys["alice"]),
                _bearer(wrong),
                {"x-api-key": wrong},
                {"authorization": f"Basic {wrong}"},
            )
        ]
        with contextlib.suppress(grpc.RpcError):
            _detect(keyed.grpc_target, (("authorization", f"Bearer {wrong}"),))
        _detect(keyed.grpc_target, (("authorization", f"Bearer {keys['bob']}"),))
    metrics = httpx.get(keyed.http_url + "/metrics", headers=_bearer(keys["alice"])).text
    assert [r.status_code for r in seen] == [200, 401, 401, 401]
    everything = caplog.text + metrics + "".join(r.text + str(r.headers) for r in seen)
    for secret in (*keys.values(), wrong):
        assert secret not in everything
    assert 'samo_access_requests_total{key="alice"}' in metrics
    assert 'samo_access_requests_total{key="bob"}' in metrics
    assert 'samo_access_rejections_total{key="",reason="unauthenticated"}' in metrics


def test_cors_answers_only_the_allowed_origin(keyed: Gateway, keys: dict[str, str]) -> None:
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    allowed = httpx.options(keyed.http_url + "/v1/emotions", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(
        keyed.http_url + "/v1/emotions", headers={**preflight, "origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    # A browser can read the refusal too (CORS headers on the 401) and the answer.
    refused = httpx.post(keyed.http_url + "/v1/emotions", json=TEXT, headers={"origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    answered = httpx.post(
        keyed.http_url + "/v1/emotions",
        json=TEXT,
        headers={"origin": ORIGIN, **_bearer(keys["alice"])},
        timeout=30,
    )
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == ORIGIN


def test_without_keys_or_allow_list_the_gateway_is_open_and_sends_no_cors(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.http_url + "/v1/emotions", json=TEXT, headers={"origin": ORIGIN}, timeout=30
    )
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)
    preflight = httpx.options(
        gateway.http_url + "/v1/emotions", headers={"origin": ORIGIN, "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert _detect(gateway.grpc_target).results


# Rate limits, in memory. Day-long windows: a window boundary cannot fall inside the test.


@pytest.fixture(scope="module")
def limited(
    triton: LocalTriton,
    serving_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
    keys: dict[str, str],
) -> Iterator[Gateway]:
    path = tmp_path_factory.mktemp("limited") / "api-keys"
    _write_keys(path, keys)
    settings = _settings(
        triton, serving_repository, api_keys_file=path, rate_limit="3/day", audio_rate_limit="10/day"
    )
    with running_gateway(settings) as running:
        yield running


def test_rate_limit_per_key_with_retry_after_over_http_and_grpc(
    limited: Gateway, keys: dict[str, str]
) -> None:
    alice = _bearer(keys["alice"])
    for _ in range(2):
        assert (
            httpx.post(limited.http_url + "/v1/emotions", json=TEXT, headers=alice, timeout=30).status_code
            == 200
        )
    assert _detect(limited.grpc_target, tuple(alice.items())).results  # the third: both transports count
    refused = httpx.post(limited.http_url + "/v1/emotions", json=TEXT, headers=alice)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "3 per day" in refused.json()["error"]["message"]

    error = _grpc_error(lambda: _detect(limited.grpc_target, tuple(alice.items())))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(error.trailing_metadata())
    assert trailing["samo-error-type"] == "rate_limited"
    assert 1 <= int(trailing["retry-after"]) <= 86_400
    assert int(trailing["grpc-retry-pushback-ms"]) == 1000 * int(trailing["retry-after"])
    with GrpcClient(limited.grpc_target, api_key=keys["alice"]) as client, pytest.raises(SamoError) as caught:
        client.detect_emotions(TEXT["texts"])
    assert caught.value.type is ErrorType.RATE_LIMITED
    assert caught.value.retry_after_s is not None
    assert caught.value.retry_after_s >= 1

    # Another key has its own budget; probes have none.
    assert (
        httpx.post(
            limited.http_url + "/v1/emotions", json=TEXT, headers=_bearer(keys["bob"]), timeout=30
        ).status_code
        == 200
    )
    assert httpx.get(limited.http_url + "/health/live").status_code == 200
    metrics = httpx.get(limited.http_url + "/metrics", headers=_bearer(keys["dave"])).text
    assert 'samo_access_rejections_total{key="alice",reason="rate_limited"} 3.0' in metrics


def test_audio_seconds_count_against_their_own_limit(
    triton: LocalTriton, serving_repository: Path, tmp_path: Path, keys: dict[str, str]
) -> None:
    path = tmp_path / "api-keys"
    _write_keys(path, keys)
    settings = _settings(triton, serving_repository, api_keys_file=path, audio_rate_limit="10/day")
    with running_gateway(settings) as running:

        def transcribe(seconds: float, key: str = "carol") -> httpx.Response:
            """The answer once Whisper is up: a 503 (a model reloading on a loaded machine) is retried.

            A 200, or a 504 when Whisper is slow on a loaded machine, both mean that the limiter let the
            upload through and charged it: the charge comes before any audio goes to Triton.
            """
            deadline = time.monotonic() + 120
            while True:
                files = {"file": ("silence.wav", _silence_wav(seconds), "audio/wav")}
                response = httpx.post(
                    running.http_url + "/v1/transcribe",
                    files=files,
                    data={"beam_size": "1"},
                    headers=_bearer(keys[key]),
                    timeout=60,
                )
                if response.status_code != 503 or time.monotonic() > deadline:
                    return response
                time.sleep(int(response.headers.get("retry-after", "1")))

        first = transcribe(6.0)
        assert first.status_code in (200, 504), first.text
        refused = transcribe(6.0)  # 12 s of the 10 allowed
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
        assert "audio rate limit of 10 per day seconds" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        # The refused upload consumed nothing: 4 s still fit; another key has its own budget.
        assert transcribe(4.0).status_code in (200, 504)
        assert transcribe(6.0, key="bob").status_code in (200, 504)
        # Longer than the whole budget can never fit: too large, not "retry later".
        too_long = transcribe(11.0, key="dave")
        assert too_long.status_code == 413
        assert too_long.json()["error"]["type"] == "too_large"
        assert "audio rate limit of 10 per day seconds" in too_long.json()["error"]["message"]
        metrics = httpx.get(running.http_url + "/metrics", headers=_bearer(keys["dave"])).text
        assert 'samo_access_rejections_total{key="carol",reason="audio_rate_limited"} 1.0' in metrics


def test_open_gateway_limits_per_client_address(triton: LocalTriton, serving_repository: Path) -> None:
    with running_gateway(_settings(triton, serving_repository, rate_limit="2/day")) as running:
        assert httpx.get(running.http_url + "/openapi.json").status_code == 200
        assert _detect(running.grpc_target).results
        refused = httpx.get(running.http_url + "/openapi.json")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert _grpc_error(lambda: _detect(running.grpc_target)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# Rate limits in a real Redis, shared by two gateways.


@pytest.fixture()
def redis_url(tmp_path: Path) -> Iterator[str]:
    with running_redis(tmp_path) as url:
        yield url


def _redis_keys(url: str) -> list[str]:
    """The keys Redis holds, read with Debian's redis-cli (installed with redis-server)."""
    command = ["redis-cli", "-u", url, "--scan"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.split()


def test_redis_counters_are_shared_by_two_gateways(
    triton: LocalTriton, serving_repository: Path, redis_url: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    path = tmp_path / "api-keys"
    _write_keys(path, keys)
    access = {"api_keys_file": path, "rate_limit": "4/day", "rate_limit_storage": redis_url}
    alice = _bearer(keys["alice"])
    with (
        running_gateway(_settings(triton, serving_repository, **access)) as first,
        running_gateway(_settings(triton, serving_repository, **access)) as second,
    ):
        for running in (first, second, first, second):
            assert httpx.get(running.http_url + "/openapi.json", headers=alice).status_code == 200
        # Each gateway saw two of alice's requests; together they spent her four.
        for running in (first, second):
            refused = httpx.get(running.http_url + "/openapi.json", headers=alice)
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
        assert httpx.get(second.http_url + "/openapi.json", headers=_bearer(keys["bob"])).status_code == 200
        stored = _redis_keys(redis_url)
        assert any("key:alice" in key for key in stored)
        assert not any(secret in "".join(stored) for secret in keys.values())


def test_an_unreachable_redis_lets_requests_through(
    triton: LocalTriton,
    serving_repository: Path,
    keys: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "api-keys"
    _write_keys(path, keys)
    storage = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = _settings(
        triton, serving_repository, api_keys_file=path, rate_limit="1/day", rate_limit_storage=storage
    )
    with caplog.at_level(logging.WARNING), running_gateway(settings) as running:
        for _ in range(3):
            assert (
                httpx.get(running.http_url + "/openapi.json", headers=_bearer(keys["alice"])).status_code
                == 200
            )
    assert "rate-limit storage unreachable" in caplog.text


# TLS and SIGHUP, on the gateway as `samo gateway` runs it.


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    authority.cert_pem.write_to_path(str(paths["ca"]))
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(paths["cert"]), append=index > 0)
    issued.private_key_pem.write_to_path(str(paths["key"]))
    return paths


@dataclass(frozen=True)
class ServedProcess:
    process: subprocess.Popen[bytes]
    https_url: str
    grpc_target: str
    key_file: Path
    log: Path


@pytest.fixture(scope="module")
def tls_gateway(
    triton: LocalTriton,
    serving_repository: Path,
    certificates: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    keys: dict[str, str],
    samo_process,
) -> Iterator[ServedProcess]:
    folder = tmp_path_factory.mktemp("tls-gateway")
    key_file = folder / "api-keys"
    _write_keys(key_file, {"alice": keys["alice"]})
    environment: dict[str, str | None] = {
        "SAMO_TRITON_GRPC_URL": triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(serving_repository),
        "SAMO_DEFAULT_SUMMARIZER": "extractive",
        "SAMO_API_KEYS_FILE": str(key_file),
        "SAMO_API_KEYS_RELOAD_S": "3600",  # only SIGHUP reloads within the test
        "SAMO_TLS_CERT": str(certificates["cert"]),
        "SAMO_TLS_KEY": str(certificates["key"]),
        "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),
    }
    log = folder / "gateway.log"
    trust = ssl.create_default_context(cafile=str(certificates["ca"]))

    def live(gateway: SamoProcess) -> bool:
        assert gateway.process.poll() is None, log.read_text()
        try:
            url = f"https://127.0.0.1:{gateway.port}/health/live"
            return httpx.get(url, verify=trust).status_code == 200
        except httpx.TransportError:
            return False

    with samo_process("gateway", env=environment, log=log, ready=live) as gateway:
        yield ServedProcess(
            gateway.process, f"https://127.0.0.1:{gateway.port}", gateway.grpc_target, key_file, log
        )


def test_https_and_grpc_over_tls_with_the_typed_clients(
    tls_gateway: ServedProcess, certificates: dict[str, Path], keys: dict[str, str]
) -> None:
    with (
        HttpClient(tls_gateway.https_url, api_key=keys["alice"], ca_cert=certificates["ca"]) as http,
        GrpcClient(tls_gateway.grpc_target, api_key=keys["alice"], ca_cert=certificates["ca"]) as rpc,
    ):
        assert http.detect_emotions(TEXT["texts"]) == rpc.detect_emotions(TEXT["texts"])
    with (
        GrpcClient(tls_gateway.grpc_target, ca_cert=certificates["ca"]) as rpc,
        pytest.raises(SamoError) as caught,
    ):
        rpc.detect_emotions(TEXT["texts"])
    assert caught.value.type is ErrorType.UNAUTHENTICATED


def test_plain_connections_to_tls_ports_fail(
    tls_gateway: ServedProcess, certificates: dict[str, Path]
) -> None:
    plain = tls_gateway.https_url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/health/live")
    with pytest.raises(httpx.ConnectError):  # the certificate is not trusted without the test's CA
        httpx.get(tls_gateway.https_url + "/health/live")
    error = _grpc_error(lambda: _detect(tls_gateway.grpc_target))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(
        tls_gateway.grpc_target, grpc.ssl_channel_credentials(certificates["ca"].read_bytes())
    ) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


def test_sighup_reloads_the_key_file(
    tls_gateway: ServedProcess, certificates: dict[str, Path], keys: dict[str, str]
) -> None:
    trust = ssl.create_default_context(cafile=str(certificates["ca"]))

    def status(name: str) -> int:
        return httpx.get(
            tls_gateway.https_url + "/openapi.json", headers=_bearer(keys[name]), verify=trust
        ).status_code

    assert status("alice") == 200
    _write_keys(tls_gateway.key_file, {"bob": keys["bob"]})
    assert status("bob") == 401  # no reload yet: the file is polled only hourly here
    tls_gateway.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: status("bob") == 200)
    assert status("alice") == 401
    assert tls_gateway.process.poll() is None
    log = tls_gateway.log.read_text()
    assert "API keys reloaded" in log
    assert not any(secret in log for secret in keys.values())
