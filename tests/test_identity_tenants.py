"""Managed API keys and tenant quotas across two gateway processes sharing a real PostgreSQL and a real
Redis (tests/local_services.py), as two replicas would; quotas failing closed when Redis is gone; the
generated-tokens and audio-seconds quotas against a real summarizer and Whisper.

The gateways have no Triton: a request the access check and the gate let through answers `not_found`
(no model installed); refusals answer 401, 403 or 429."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from load_tests.live_client import realtime_url
from samo.free_ports import free_port
from samo.settings import QuotaSettings
from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, SamoProcess, gateway_settings, running_gateway
from tests.local_services import running_postgres, running_redis, wait_until
from tests.speech import RATE, wav_bytes

TEXT = {"texts": ["A quiet evening with a good book."]}
PASSED = 404  # through access and the gate, to a service with no model installed
QUOTA_TENANT = "quota-co"
REFRESH_S = 0.5
REVOKED_WITHIN_S = 3.0
LIVE_TENANT = "live-co"
CRASH_TENANT = "crash-co"
LEASE_S = 2.0
"""The live sessions' lease: a dead gateway's slots are free within it (renewed every third of it)."""
"""What the docs promise: a revoked key is refused everywhere within seconds (here: a 0.5 s refresh)."""


@dataclass(frozen=True)
class Replicas:
    first: SamoProcess
    second: SamoProcess
    admin_key: str
    environment: dict[str, str | None]

    @property
    def both(self) -> tuple[SamoProcess, SamoProcess]:
        return self.first, self.second


def _post_to(url: str, key: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)


def _post(replica: SamoProcess, key: str, path: str = "/v1/emotions", body: object = TEXT) -> httpx.Response:
    return _post_to(replica.http_url, key, path, body)


def _emotions_status(replica: SamoProcess, key: str) -> int:
    return _post(replica, key).status_code


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, samo_process: Callable[..., AbstractContextManager[SamoProcess]]
) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("replicas")
    admin_key = secrets.token_urlsafe(24)
    keys_file = folder / "api-keys"
    keys_file.write_text(f"operator:{admin_key}\n")
    with ExitStack() as stack:
        database = stack.enter_context(running_postgres())
        redis = stack.enter_context(running_redis(folder))
        environment: dict[str, str | None] = {
            "SAMO_MODEL_REPOSITORY": str(folder),
            "SAMO_TRITON_GRPC_URL": f"127.0.0.1:{free_port()}",
            "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),
            "SAMO_API_KEYS_FILE": str(keys_file),
            "SAMO_DATABASE_URL": database,
            "SAMO_RATE_LIMIT_STORAGE": redis,
            "SAMO_MANAGED_KEYS_REFRESH_S": str(REFRESH_S),
            "SAMO_TENANT_QUOTAS": json.dumps(
                {
                    QUOTA_TENANT: {"requests": "5/day"},
                    LIVE_TENANT: {"live_sessions": 2},
                    CRASH_TENANT: {"live_sessions": 1},
                }
            ),
            "SAMO_REALTIME_MAX_SESSIONS_PER_KEY": "1",
            "SAMO_REALTIME_SESSION_LEASE_S": str(LEASE_S),
        }
        first = stack.enter_context(samo_process("gateway", env=environment, ready="/health/live"))
        second = stack.enter_context(samo_process("gateway", env=environment, ready="/health/live"))
        yield Replicas(first, second, admin_key, environment)


def _create(replicas: Replicas, tenant: str, scopes: list[str], on: SamoProcess | None = None) -> dict:
    response = _post(
        on or replicas.first,
        replicas.admin_key,
        "/v1/admin/keys",
        {"name": "web-app", "tenant": tenant, "scopes": scopes},
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_key_created_on_one_replica_works_on_both_and_a_revoked_one_on_neither(replicas: Replicas) -> None:
    created = _create(replicas, "acme", ["emotions"])
    key = created["key"]
    assert key.startswith(created["prefix"] + "_")
    assert created["prefix"].startswith("samo_")
    assert _emotions_status(replicas.first, key) == PASSED  # at once where it was made
    assert wait_until(lambda: _emotions_status(replicas.second, key) == PASSED, timeout_s=REVOKED_WITHIN_S)
    # Scopes: emotions only; the admin API needs `admin`.
    assert _post(replicas.second, key, "/v1/summarize").status_code == 403
    assert (
        _post(
            replicas.second, key, "/v1/admin/keys", {"name": "x", "tenant": "acme", "scopes": ["admin"]}
        ).status_code
        == 403
    )
    # Listed on the other replica, never with the key itself.
    listing = httpx.get(
        replicas.second.http_url + "/v1/admin/keys",
        params={"tenant": "acme"},
        headers={"authorization": f"Bearer {replicas.admin_key}"},
    )
    assert listing.status_code == 200
    [listed] = [k for k in listing.json()["keys"] if k["id"] == created["id"]]
    assert listed["revoked_at"] is None and "key" not in listed
    assert key not in listing.text

    # A rollover: the successor works beside the old key until the old one is revoked, and after.
    successor = _create(replicas, "acme", ["emotions"], on=replicas.second)["key"]
    assert wait_until(
        lambda: _emotions_status(replicas.first, successor) == PASSED, timeout_s=REVOKED_WITHIN_S
    )
    assert _emotions_status(replicas.first, key) == PASSED

    revoked_at = time.monotonic()
    response = httpx.delete(
        f"{replicas.second.http_url}/v1/admin/keys/{created['id']}",
        headers={"authorization": f"Bearer {replicas.admin_key}"},
    )
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert wait_until(
        lambda: all(_emotions_status(replica, key) == 401 for replica in replicas.both),
        timeout_s=REVOKED_WITHIN_S,
    )
    took = time.monotonic() - revoked_at
    assert took < REVOKED_WITHIN_S
    assert [_emotions_status(replica, successor) for replica in replicas.both] == [PASSED, PASSED]
    logging.getLogger(__name__).info("revoked key refused by both replicas after %.2f s", took)
    missing = httpx.delete(
        f"{replicas.first.http_url}/v1/admin/keys/no-such-key",
        headers={"authorization": f"Bearer {replicas.admin_key}"},
    )
    assert missing.status_code == 404


def test_a_tenant_quota_holds_across_both_replicas_and_transports(replicas: Replicas) -> None:
    key = _create(replicas, QUOTA_TENANT, ["emotions"])["key"]
    other = _create(replicas, "unlimited-co", ["emotions"])["key"]
    assert wait_until(lambda: _emotions_status(replicas.second, other) == PASSED, timeout_s=REVOKED_WITHIN_S)
    assert wait_until(lambda: _emotions_status(replicas.second, key) == PASSED, timeout_s=REVOKED_WITHIN_S)
    # One spent above; four more, alternating replicas and transports: five of five per day.
    assert _emotions_status(replicas.first, key) == PASSED
    assert _emotions_status(replicas.second, key) == PASSED
    metadata = (("authorization", f"Bearer {key}"),)
    for replica in replicas.both:
        with grpc.insecure_channel(replica.grpc_target) as channel:
            stub = samo_v1_pb2_grpc.SamoStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.DetectEmotions(
                    samo_v1_pb2.DetectEmotionsRequest(texts=TEXT["texts"]), timeout=30, metadata=metadata
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for replica in replicas.both:
        refused = _post(replica, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
        assert "tenant quota of 5 per day requests" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
    assert _emotions_status(replicas.first, other) == PASSED  # another tenant has its own


@pytest.mark.parametrize(("policy", "expected"), [("refuse", 503), ("allow", PASSED)])
def test_quotas_fail_closed_when_redis_is_unreachable_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str, expected: int
) -> None:
    key = secrets.token_urlsafe(24)
    (tmp_path / "api-keys").write_text(f"tenant-a:{key}\n")
    settings = gateway_settings(
        model_repository=tmp_path,
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        health_probe_interval_s=QUIET_PROBES_S,
        api_keys_file=tmp_path / "api-keys",
        rate_limit_storage=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        tenant_quota=QuotaSettings(requests="100/minute"),
        quota_storage_failure=policy,
    )
    with caplog.at_level(logging.WARNING), running_gateway(settings) as gateway:
        response = httpx.post(
            gateway.http_url + "/v1/emotions",
            json=TEXT,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        metrics = httpx.get(gateway.http_url + "/metrics", headers={"authorization": f"Bearer {key}"}).text
    assert response.status_code == expected
    assert "tenant quota storage unreachable" in caplog.text
    assert "samo_quota_storage_failures_total" in metrics


def test_generated_tokens_and_audio_seconds_count_against_the_tenant_quota(
    triton: LocalTriton, tmp_path: Path
) -> None:
    """Tokens are charged once the summary is generated (what is left of the window, at most), then
    the next summary is refused until the window has room (transcriptions go on); audio is charged as it
    is decoded, before Whisper."""
    key = secrets.token_urlsafe(24)
    (tmp_path / "api-keys").write_text(f"tenant-t:{key}\n")
    settings = gateway_settings(
        triton,
        default_summarizer="extractive",
        health_probe_interval_s=QUIET_PROBES_S,
        api_keys_file=tmp_path / "api-keys",
        tenant_quota=QuotaSettings(generated_tokens="12/day", audio_seconds="10/day"),
    )
    body = {
        "texts": [TEXT["texts"][0]],
        "model": "tiny_t5",
        "max_new_tokens": 8,
        "min_new_tokens": 8,
        "num_beams": 1,
    }
    with running_gateway(settings) as gateway:
        answers = [_post_to(gateway.http_url, key, "/v1/summarize", body) for _ in range(3)]
        audio = [_transcribe_silence(gateway.http_url, key, seconds=6.0) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].json()["results"][0]["tokens"] == 8  # 8 of 12 charged, then the 4 left
    error = answers[2].json()["error"]
    assert error["type"] == "rate_limited"
    assert error["message"].startswith("generated-tokens tenant quota of 12 per day tokens reached")
    assert int(answers[2].headers["retry-after"]) >= 1
    # Silence costs Whisper nothing (no speech found); a 504 on a loaded machine was charged all the same.
    assert audio[0].status_code in (200, 504), audio[0].text
    assert audio[1].status_code == 429
    assert (
        "audio tenant quota of 10 per day seconds reached (6 s more asked)"
        in audio[1].json()["error"]["message"]
    )


def _transcribe_silence(url: str, key: str, seconds: float) -> httpx.Response:
    """An upload of silence; a 503 (a model reloading on a loaded machine) is sent again."""
    files = {"file": ("silence.wav", wav_bytes(np.zeros(int(RATE * seconds), dtype=np.int16)), "audio/wav")}
    for _ in range(20):
        response = httpx.post(
            url + "/v1/transcribe",
            files=files,
            data={"beam_size": "1"},
            headers={"authorization": f"Bearer {key}"},
            timeout=60,
        )
        if response.status_code != 503:
            return response
        time.sleep(int(response.headers.get("retry-after", "1")))
    return response


# --- concurrent live sessions: the tenant's quota and the per-key limit, across replicas -----------


def _live_key(replicas: Replicas, tenant: str) -> str:
    key = _create(replicas, tenant, ["live"])["key"]
    assert wait_until(
        lambda: all(_emotions_status(replica, key) == 403 for replica in replicas.both),  # known, no scope
        timeout_s=REVOKED_WITHIN_S,
    )
    return key


async def _open(replica: SamoProcess, key: str) -> ClientConnection:
    websocket = await connect(
        realtime_url(replica.http_url), additional_headers={"authorization": f"Bearer {key}"}
    )
    event = json.loads(await websocket.recv())
    if event["type"] != "session.created":
        await websocket.close()
        raise AssertionError(event)
    return websocket


async def _refused(replica: SamoProcess, key: str) -> tuple[dict, int | None]:
    async with connect(
        realtime_url(replica.http_url), additional_headers={"authorization": f"Bearer {key}"}
    ) as websocket:
        event = json.loads(await websocket.recv())
        await websocket.wait_closed()
        return event, websocket.close_code


def _grpc_live_code(replica: SamoProcess, key: str) -> tuple[grpc.StatusCode, str]:
    request = samo_v1_pb2.LiveClientEvent(session_update=samo_v1_pb2.LiveSessionUpdate(rate=RATE))
    with grpc.insecure_channel(replica.grpc_target) as channel:
        call = samo_v1_pb2_grpc.SamoStub(channel).TranscribeLive(
            iter([request]), timeout=30, metadata=(("authorization", f"Bearer {key}"),)
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
    return caught.value.code(), caught.value.details() or ""


def test_concurrent_live_sessions_are_counted_per_tenant_and_per_key_across_replicas(
    replicas: Replicas,
) -> None:
    """Quota 2 for the tenant, 1 per key: a key's second session is refused on the other replica, the
    tenant's third on either, over WebSocket (an `error` event, close 1013) and gRPC
    (RESOURCE_EXHAUSTED); a session that ends frees its slot at once."""
    alice, bob, carol = (_live_key(replicas, LIVE_TENANT) for _ in range(3))

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        first = await _open(replicas.first, alice)
        seen["same key elsewhere"] = await _refused(replicas.second, alice)
        second = await _open(replicas.second, bob)
        seen["tenant full"] = await _refused(replicas.first, carol)
        seen["grpc tenant full"] = await asyncio.to_thread(_grpc_live_code, replicas.second, carol)
        await first.close()  # alice leaves: her slot, and one of the tenant's, are free again
        started = time.monotonic()
        while True:
            try:
                third = await _open(replicas.second, carol)
                break
            except AssertionError:
                assert time.monotonic() - started < 5, "the slot of a closed session was not freed"
                await asyncio.sleep(0.1)
        seen["freed after"] = time.monotonic() - started
        await second.close()
        await third.close()
        return seen

    seen = asyncio.run(scenario())
    event, code = seen["same key elsewhere"]  # type: ignore[misc]
    assert (event["error"]["code"], code) == ("rate_limited", 1013)
    assert "at most 1 live sessions may be open at once per API key" in event["error"]["message"]
    event, code = seen["tenant full"]  # type: ignore[misc]
    assert (event["type"], event["error"]["code"], code) == ("error", "rate_limited", 1013)
    assert event["error"]["message"] == "tenant quota of 2 concurrent live sessions reached; close one first"
    status, details = seen["grpc tenant full"]  # type: ignore[misc]
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant quota of 2 concurrent" in details
    assert isinstance(seen["freed after"], float) and seen["freed after"] < 2.0


def test_the_live_sessions_of_a_gateway_that_dies_free_their_slots_within_a_lease(
    replicas: Replicas, samo_process: Callable[..., AbstractContextManager[SamoProcess]]
) -> None:
    key = _live_key(replicas, CRASH_TENANT)  # quota 1
    other_key = _live_key(replicas, CRASH_TENANT)
    with samo_process("gateway", env=replicas.environment, ready="/health/live") as doomed:
        assert wait_until(lambda: _emotions_status(doomed, key) == 403, timeout_s=REVOKED_WITHIN_S)

        async def hold_then_crash() -> tuple[tuple[dict, int | None], float]:
            websocket = await _open(doomed, key)
            await asyncio.sleep(LEASE_S)  # renewed meanwhile: still held past its first lease
            refused = await _refused(replicas.first, other_key)
            os.killpg(doomed.pid, signal.SIGKILL)  # no close, no release: only the lease ends it
            killed = time.monotonic()
            while True:
                try:
                    session = await _open(replicas.first, other_key)
                    break
                except AssertionError:
                    await asyncio.sleep(0.1)
            freed = time.monotonic() - killed
            await session.close()
            websocket.transport.abort()
            return refused, freed

        (event, code), freed = asyncio.run(hold_then_crash())
    assert event["error"]["code"] == "rate_limited" and code == 1013
    assert "tenant quota of 1 concurrent live sessions" in event["error"]["message"]
    assert freed <= LEASE_S + 1.0, freed
    logging.getLogger(__name__).info("a dead gateway's live session slot freed after %.2f s", freed)
