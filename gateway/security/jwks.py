"""An issuer's signing keys: its OpenID discovery document, then its JWKS, cached.

Refreshed when the cache passes its lifetime and when a token names a key (`kid`) the cache does not
hold (key rotation needs no restart), at most once per `min_refresh_s` so that tokens with made-up
`kid`s cannot make the gateway hammer the issuer. A failed fetch keeps the keys already held: an
unreachable issuer never blocks tokens signed with them, and never lets a token through unverified.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
"""Asymmetric only: `none` and HS* (which a public key would sign as a shared secret) never verify."""
DISCOVERY_PATH = "/.well-known/openid-configuration"


class IssuerUnreachable(Exception):
    """The discovery document or the JWKS could not be fetched (the message names no token)."""


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float
    cache_s: float
    min_refresh_s: float
    verify: ssl.SSLContext | bool = True


def usable_keys(document: Any) -> dict[str, PyJWK]:
    """`kid` -> key for the signing keys of a JWKS whose algorithm is allowed; the rest are skipped."""
    keys: dict[str, PyJWK] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):  # never a shared secret (`oct`)
            continue
        try:
            key = PyJWK(entry)
        except PyJWTError:
            continue
        if key.algorithm_name in ALLOWED_ALGORITHMS:
            keys[str(entry["kid"])] = key
    return keys


class IssuerKeys:
    """The signing keys of one issuer, fetched on first use (an issuer down at start delays nothing)."""

    def __init__(self, issuer: str, options: FetchOptions) -> None:
        self.issuer = issuer.rstrip("/")
        """Without a trailing `/`: where the discovery path goes (OpenID Connect Discovery, section 4)."""
        self.options = options
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_try = -float("inf")
        self._unreachable = False
        """The last fetch failed: a key not held is then the issuer's outage, not the token's fault."""
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> PyJWK | None:
        """The key named `kid`; refreshed first when stale or when `kid` is new (rate-limited).
        None: the issuer does not publish it. IssuerUnreachable: it is not held and could not be fetched."""
        fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at < self.options.cache_s
        if kid in self._keys and fresh:
            return self._keys[kid]
        async with self._lock:
            if time.monotonic() - self._last_try >= self.options.min_refresh_s:
                self._last_try = time.monotonic()
                try:
                    self._keys = await self._fetch()
                    self._fetched_at = time.monotonic()
                    self._unreachable = False
                except IssuerUnreachable as exc:
                    logger.warning(
                        "signing keys of %s not refreshed, %d kept: %s", self.issuer, len(self._keys), exc
                    )
                    self._unreachable = True
            if kid not in self._keys and self._unreachable:
                raise IssuerUnreachable(f"{self.issuer} could not be reached")
        return self._keys.get(kid)

    async def _fetch(self) -> dict[str, PyJWK]:
        async with httpx.AsyncClient(timeout=self.options.timeout_s, verify=self.options.verify) as client:
            discovery = await self._get_json(client, self.issuer + DISCOVERY_PATH)
            if discovery.get("issuer", "").rstrip("/") != self.issuer:
                raise IssuerUnreachable("the discovery document names another issuer")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise IssuerUnreachable("the discovery document has no https `jwks_uri`")
            keys = usable_keys(await self._get_json(client, jwks_uri))
        logger.info("signing keys of %s: %d (%s)", self.issuer, len(keys), ", ".join(keys))
        return keys

    @staticmethod
    async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        try:
            response = await client.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IssuerUnreachable(f"{url}: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise IssuerUnreachable(f"{url}: not a JSON object")
        return document
