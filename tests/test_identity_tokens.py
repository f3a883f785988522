"""Bearer tokens from real OIDC issuers (tests/oidc_issuer.py: HTTPS, discovery, JWKS, keys generated
here) and the scope gate, over real HTTP and gRPC, on a gateway without Triton: a request the gate lets
through reaches the emotion service and answers `not_found` (no model installed), one it refuses
answers 401/403; both are told apart from the answer's type."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.grpc_api import samo_v1_pb2, samo_v1_pb2_grpc
from samo.free_ports import free_port
from samo.settings import OidcIssuer
from tests.conftest import QUIET_PROBES_S, Gateway, gateway_settings, running_gateway
from tests.oidc_issuer import Issuer, IssuerServer, SigningKey, running_issuer

TEXT = "We walked home in the rain and laughed about it."
PASSED = "not_found"  # through the gate, to a service with no model installed


@dataclass(frozen=True)
class Setup:
    gateway: Gateway
    server: IssuerServer
    alpha: Issuer
    """Tenant from the `org` claim, OAuth's space-separated `scope`."""
    beta: Issuer
    """One fixed tenant, `samo:`-prefixed scopes in a `scp` list; its URL ends with `/`, as Auth0's do."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("oidc")
    with running_issuer(folder) as server:
        alpha = server.add(
            "alpha", SigningKey.generate("a-rsa", "RS256"), SigningKey.generate("a-ed", "EdDSA")
        )
        beta = server.add("beta", SigningKey.generate("b-ec", "ES256"), trailing_slash=True)
        issuers = (
            OidcIssuer(issuer=alpha.url, audiences=("samo",), tenant_claim="org"),
            OidcIssuer(
                issuer=beta.url, audiences=("samo",), tenant="beta", scopes_claim="scp", scope_prefix="samo:"
            ),
        )
        settings = gateway_settings(
            model_repository=folder,  # no models: what passes the gate answers not_found
            triton_grpc_url=f"127.0.0.1:{free_port()}",
            health_probe_interval_s=QUIET_PROBES_S,
            oidc_issuers=issuers,
            oidc_ca_file=server.ca_file,
            oidc_jwks_min_refresh_s=1.0,
            oidc_clock_skew_s=30.0,
        )
        with running_gateway(settings) as gateway:
            yield Setup(gateway, server, alpha, beta)


def _http(
    setup: Setup, token: str | None, path: str = "/v1/emotions", body: object = None
) -> tuple[int, str]:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    response = httpx.post(
        setup.gateway.http_url + path, json=body or {"texts": [TEXT]}, headers=headers, timeout=30
    )
    return response.status_code, response.json()["error"]["type"]


def _grpc(setup: Setup, token: str | None, method: str = "DetectEmotions") -> tuple[grpc.StatusCode, str]:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(setup.gateway.grpc_target) as channel:
        stub = samo_v1_pb2_grpc.SamoStub(channel)
        try:
            if method == "DetectEmotions":
                stub.DetectEmotions(
                    samo_v1_pb2.DetectEmotionsRequest(texts=[TEXT]), timeout=30, metadata=metadata
                )
            elif method == "Summarize":
                stub.Summarize(samo_v1_pb2.SummarizeRequest(texts=[TEXT]), timeout=30, metadata=metadata)
            else:  # a server stream
                request = samo_v1_pb2.AnalyzeJournalRequest(text=TEXT)
                list(stub.StreamJournal(request, timeout=30, metadata=metadata))
        except grpc.RpcError as error:
            return error.code(), dict(error.trailing_metadata() or ())["samo-error-type"]
    raise AssertionError("answered without an error, though no model is installed")


def _both(setup: Setup, token: str | None) -> tuple[tuple[int, str], tuple[grpc.StatusCode, str]]:
    return _http(setup, token), _grpc(setup, token)


REFUSED = ((401, "unauthenticated"), (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"))
THROUGH = ((404, PASSED), (grpc.StatusCode.NOT_FOUND, PASSED))


def test_tokens_of_two_issuers_and_three_algorithms_pass_on_both_transports(setup: Setup) -> None:
    alpha_rsa, alpha_ed = setup.alpha.keys
    assert _both(setup, setup.alpha.token(alpha_rsa, org="acme", scope="openid emotions")) == THROUGH
    assert _both(setup, setup.alpha.token(alpha_ed, org="acme", scope="emotions")) == THROUGH
    assert _both(setup, setup.beta.token(scp=["samo:emotions", "other-api:read"])) == THROUGH
    # Within the clock skew (30 s): expired 10 s ago, valid from 10 s from now.
    now = int(time.time())
    assert _both(setup, setup.alpha.token(org="acme", scope="emotions", exp=now - 10)) == THROUGH
    assert _both(setup, setup.alpha.token(org="acme", scope="emotions", nbf=now + 10)) == THROUGH


def _segments(token: str) -> list[str]:
    return token.split(".")


def _encoded(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _refused_tokens(setup: Setup) -> dict[str, str]:
    """Every token the gateway must refuse, by why."""
    alpha = setup.alpha
    good = alpha.token(org="acme", scope="emotions")
    header, payload, signature = _segments(good)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    now = int(time.time())
    public_pem = (
        alpha.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    stranger = SigningKey.generate("a-rsa", "RS256")  # a published kid, a key the issuer never had
    impostor = Issuer(alpha.url.replace("alpha", "gamma"), [stranger])
    return {
        "expired": alpha.token(org="acme", scope="emotions", exp=now - 120),
        "not yet valid": alpha.token(org="acme", scope="emotions", nbf=now + 120),
        "wrong audience": alpha.token(org="acme", scope="emotions", aud="another-api"),
        "no expiry": alpha.token(org="acme", scope="emotions", exp=None),
        "wrong issuer": impostor.token(org="acme", scope="emotions"),
        "alg none": f"{_encoded({'alg': 'none', 'kid': 'a-rsa', 'typ': 'JWT'})}.{payload}.",
        "HS256 with the public key": _hs256(claims, public_pem),
        "tampered payload": f"{header}.{_encoded(claims | {'org': 'other-tenant'})}.{signature}",
        "wrong key for the kid": alpha.token(stranger, org="acme", scope="emotions"),
        "unpublished kid": alpha.token(
            SigningKey.generate("a-unknown", "ES256"), org="acme", scope="emotions"
        ),
        "oversized": alpha.token(org="acme", scope="emotions", padding="x" * 3300),
        "not a JWT": "eyJhbGciOi.not-base64!.x",
    }


def _hs256(claims: dict[str, object], public_pem: bytes) -> str:
    """HS256 keyed with the RSA public key's PEM: the classic confusion (PyJWT refuses to sign it)."""
    signing_input = f"{_encoded({'alg': 'HS256', 'kid': 'a-rsa', 'typ': 'JWT'})}.{_encoded(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_every_bad_token_is_refused_on_both_transports(setup: Setup) -> None:
    tokens = _refused_tokens(setup)
    answers = {why: _both(setup, token) for why, token in tokens.items()}
    assert answers == dict.fromkeys(tokens, REFUSED)
    assert _both(setup, None) == REFUSED
    # The message says which check failed, never the token.
    response = httpx.post(
        setup.gateway.http_url + "/v1/emotions",
        json={"texts": [TEXT]},
        headers={"authorization": f"Bearer {tokens['expired']}"},
    )
    assert response.json()["error"]["message"] == "the bearer token is not valid: it has expired"
    assert tokens["expired"] not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_scopes_gate_each_operation_on_both_transports(setup: Setup) -> None:
    emotions_only = setup.alpha.token(org="acme", scope="emotions")
    forbidden = (403, "forbidden")
    assert _http(setup, emotions_only) == (404, PASSED)
    assert _http(setup, emotions_only, "/v1/summarize") == forbidden
    assert _http(setup, emotions_only, "/v1/journal", {"text": TEXT}) == forbidden
    denied = (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    assert _grpc(setup, emotions_only, "Summarize") == denied
    assert _grpc(setup, emotions_only, "StreamJournal") == denied
    journal = setup.beta.token(scp=["samo:journal"])
    assert _grpc(setup, journal, "StreamJournal") == (grpc.StatusCode.NOT_FOUND, PASSED)
    assert _grpc(setup, journal) == denied
    # A valid token without a tenant has nothing to count against: refused.
    assert _http(setup, setup.alpha.token(scope="emotions")) == forbidden
    metrics = httpx.get(
        setup.gateway.http_url + "/metrics", headers={"authorization": f"Bearer {emotions_only}"}
    ).text
    assert 'samo_access_rejections_total{key="token:acme",reason="forbidden"}' in metrics
    assert 'samo_tenant_requests_total{operation="emotions",status="not_found",tenant="acme"}' in metrics


def test_rotation_refreshes_on_unknown_kid_at_most_once_a_second(setup: Setup) -> None:
    server, alpha = setup.server, setup.alpha
    assert _http(setup, alpha.token(org="acme", scope="emotions")) == (404, PASSED)  # keys cached
    time.sleep(1.1)  # past the refresh interval
    rotated = SigningKey.generate("a-rotated", "ES256")
    alpha.keys.append(rotated)
    before = server.jwks_fetches("alpha")
    assert _http(setup, alpha.token(rotated, org="acme", scope="emotions")) == (404, PASSED)
    assert server.jwks_fetches("alpha") == before + 1
    # Tokens naming made-up kids: refused, the issuer asked again at most once per refresh interval.
    made_up = [
        alpha.token(SigningKey.generate(f"made-up-{i}", "ES256"), org="acme", scope="emotions")
        for i in range(8)
    ]
    started = time.monotonic()
    assert {_http(setup, token) for token in made_up} == {REFUSED[0]}
    # At most one fetch per second (the setting) while they were sent: not one per token.
    allowed = 1 + int(time.monotonic() - started)
    assert server.jwks_fetches("alpha") - (before + 1) <= allowed < len(made_up)
    alpha.keys.remove(rotated)


def test_an_unreachable_issuer_refuses_new_keys_and_keeps_cached_ones(setup: Setup) -> None:
    server, beta = setup.server, setup.beta
    assert _http(setup, beta.token(scp=["samo:emotions"])) == (404, PASSED)  # its keys cached
    server.up = False
    try:
        time.sleep(1.1)
        rotated = SigningKey.generate("b-rotated", "ES256")
        beta.keys.append(rotated)
        # Not verifiable: refused, as 503 (retry later), never let through.
        assert _both(setup, beta.token(rotated, scp=["samo:emotions"])) == (
            (503, "upstream_unavailable"),
            (grpc.StatusCode.UNAVAILABLE, "upstream_unavailable"),
        )
        assert _both(setup, beta.token(scp=["samo:emotions"])) == THROUGH
    finally:
        server.up = True
    time.sleep(1.1)
    assert _http(setup, beta.token(beta.keys[-1], scp=["samo:emotions"])) == (404, PASSED)
    beta.keys.pop()
