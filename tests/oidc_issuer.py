"""A real OpenID Connect issuer for the tests: an HTTPS server on 127.0.0.1 (certificate from a trustme CA
the test trusts) publishing discovery documents and JWKS for several issuers (`/<name>`), with
signing keys generated here (RSA, EC P-256, Ed25519) and rotated while it runs."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: PrivateKey

    @classmethod
    def generate(cls, kid: str, algorithm: str) -> SigningKey:
        if algorithm == "RS256":
            return cls(kid, algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if algorithm == "ES256":
            return cls(kid, algorithm, ec.generate_private_key(ec.SECP256R1()))
        return cls(kid, algorithm, ed25519.Ed25519PrivateKey.generate())

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.algorithm]
        jwk = json.loads(codec.to_jwk(public))
        return jwk | {"kid": self.kid, "alg": self.algorithm, "use": "sig"}


@dataclass
class Issuer:
    url: str
    keys: list[SigningKey] = field(default_factory=list)
    """Published in its JWKS (the test may change it: rotation)."""

    def token(
        self, key: SigningKey | None = None, *, headers: Mapping[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with `key` (default: the first published), valid for 5 minutes from now, for
        audience `samo`; `claims` override or add (None removes one)."""
        key = key or self.keys[0]
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.url, "aud": "samo", "sub": "user-1", "iat": now, "exp": now + 300}
        body = {name: value for name, value in (body | claims).items() if value is not None}
        return jwt.encode(
            body, key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})}
        )


class _Handler(BaseHTTPRequestHandler):
    server: _IssuerServer

    def do_GET(self) -> None:  # http.server's name
        self.server.requests.append(self.path)
        document = self.server.document(self.path)
        if document is None or not self.server.up:
            self.send_error(404 if self.server.up else 503)
            return
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        pass


class _IssuerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.issuers: dict[str, Issuer] = {}
        self.requests: list[str] = []
        self.up = True
        """False: every request answers 503 (the issuer is down)."""

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def document(self, path: str) -> dict[str, Any] | None:
        name, _, rest = path.lstrip("/").partition("/")
        issuer = self.issuers.get(name)
        if issuer is None:
            return None
        if rest == ".well-known/openid-configuration":
            return {"issuer": issuer.url, "jwks_uri": f"{issuer.url.rstrip('/')}/jwks.json"}
        if rest == "jwks.json":
            return {"keys": [key.public_jwk() for key in issuer.keys]}
        return None


@dataclass
class IssuerServer:
    server: _IssuerServer
    ca_file: Path

    def add(self, name: str, *keys: SigningKey, trailing_slash: bool = False) -> Issuer:
        """An issuer at `/<name>` (`/<name>/` as Auth0 writes its issuers, with `trailing_slash`)."""
        issuer = Issuer(f"{self.server.base}/{name}{'/' if trailing_slash else ''}", list(keys))
        self.server.issuers[name] = issuer
        return issuer

    def jwks_fetches(self, name: str) -> int:
        return sum(1 for path in self.server.requests if path == f"/{name}/jwks.json")

    @property
    def up(self) -> bool:
        return self.server.up

    @up.setter
    def up(self, value: bool) -> None:
        self.server.up = value


@contextmanager
def running_issuer(folder: Path) -> Iterator[IssuerServer]:
    """The HTTPS issuer server, its CA's certificate in `folder/ca.pem`."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = _IssuerServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield IssuerServer(server, ca_file)
    finally:
        server.shutdown()
        server.server_close()
