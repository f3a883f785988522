"""OIDC / JWT bearer tokens from the app's identity provider, verified by PyJWT.

A token names its issuer (`iss`), which must be one of the configured ones; its signing key comes from
that issuer's JWKS (gateway/security/jwks.py). Signature, algorithm (RS256, ES256, EdDSA only),
audience, expiry and not-before (with a small clock skew) are checked; then claims map to the tenant
and the scopes. Refusals say which check failed, never the token.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    MissingRequiredClaimError,
    PyJWTError,
)

from gateway.errors import ErrorType, SamoError
from gateway.security.jwks import ALLOWED_ALGORITHMS, FetchOptions, IssuerKeys, IssuerUnreachable
from gateway.security.principal import Credential, Principal
from gateway.security.scopes import parse_scopes
from samo.settings import GatewaySettings, OidcIssuer


def looks_like_token(credential: str) -> bool:
    """A compact JWS (`header.payload.signature`, the header a base64url JSON object); API keys never are."""
    return credential.startswith("eyJ") and credential.count(".") == 2


def _refused(reason: str) -> SamoError:
    return SamoError(ErrorType.UNAUTHENTICATED, f"the bearer token is not valid: {reason}")


_CLAIM_ERRORS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ExpiredSignatureError, "it has expired"),
    (ImmatureSignatureError, "it is not valid yet"),
    (InvalidAudienceError, "it is meant for another audience"),
    (InvalidIssuerError, "its issuer is not accepted"),
    (MissingRequiredClaimError, "a required claim (exp, iss, aud, sub) is missing"),
)


class TokenVerifier:
    """The configured issuers, each with its cached keys and its claim mapping."""

    def __init__(self, issuers: tuple[OidcIssuer, ...], settings: GatewaySettings) -> None:
        verify: ssl.SSLContext | bool = True
        if settings.oidc_ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.oidc_ca_file))
        options = FetchOptions(
            timeout_s=settings.oidc_http_timeout_s,
            cache_s=settings.oidc_jwks_cache_s,
            min_refresh_s=settings.oidc_jwks_min_refresh_s,
            verify=verify,
        )
        # By `iss` exactly as configured (Auth0's ends with `/`, Keycloak's does not).
        self.issuers: Mapping[str, OidcIssuer] = {issuer.issuer: issuer for issuer in issuers}
        self.keys = {name: IssuerKeys(name, options) for name in self.issuers}
        self.leeway_s = settings.oidc_clock_skew_s
        self.max_bytes = settings.oidc_max_token_bytes

    async def principal(self, token: str) -> Principal:
        """The token's principal, or UNAUTHENTICATED saying which check failed (UNAVAILABLE when its
        issuer's keys are not held and cannot be fetched: fail closed, and the client may retry)."""
        if len(token) > self.max_bytes:
            raise _refused(f"it is over {self.max_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise _refused("it is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise _refused(f"its algorithm must be one of {', '.join(sorted(ALLOWED_ALGORITHMS))}")
        issuer_name = str(unverified.get("iss", ""))
        issuer = self.issuers.get(issuer_name)
        if issuer is None:
            raise _refused("its issuer is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("its header names no signing key (`kid`)")
        try:
            key = await self.keys[issuer_name].key(kid)
        except IssuerUnreachable:
            raise SamoError(
                ErrorType.UNAVAILABLE, "the token's issuer cannot be reached to fetch its signing keys"
            ) from None
        if key is None:
            raise _refused("its signing key (`kid`) is not published by its issuer")
        claims = self._verified(token, key, algorithm, issuer)
        return _principal(claims, issuer)

    def _verified(self, token: str, key: jwt.PyJWK, algorithm: str, issuer: OidcIssuer) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except PyJWTError as exc:
            for kind, reason in _CLAIM_ERRORS:
                if isinstance(exc, kind):
                    raise _refused(reason) from None
            raise _refused("its signature does not verify") from None


def _claim_values(value: object) -> list[str]:
    """`"a b c"` (OAuth's `scope`) or `["a", "b"]` (`scp`, `roles`) as a list of names."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _principal(claims: Mapping[str, Any], issuer: OidcIssuer) -> Principal:
    tenant = issuer.tenant or claims.get(issuer.tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise SamoError(ErrorType.FORBIDDEN, f"the token carries no tenant (claim `{issuer.tenant_claim}`)")
    scopes = parse_scopes(_claim_values(claims.get(issuer.scopes_claim)), issuer.scope_prefix)
    return Principal(
        name=str(claims["sub"]),
        authenticated=True,
        tenant=tenant,
        scopes=scopes,
        credential=Credential.TOKEN,
        label_name=f"token:{tenant}",
    )
