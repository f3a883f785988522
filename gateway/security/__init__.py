"""Access to the gateway: who calls (API keys, managed keys, bearer tokens) and how much they may,
decided once for both transports.

`access.py` decides; each transport applies it at its edge (`gateway/http/access.py`,
`gateway/grpc_api/access.py`); `api_keys.py` (the keys file), `managed_keys.py` (the admin API's keys),
`tokens.py` and `jwks.py` (OIDC issuers) find the `Principal` (`principal.py`: its tenant and scopes,
`scopes.py`); `rate_limits.py` and `quotas.py` hold the counters. What a principal may call is checked
by the operations' gate (gateway/operations/gate.py). TLS
and CORS are wired where the servers are built (`gateway/main.py`, `gateway/grpc_api/server.py`,
`gateway/http/app.py`).
"""

from gateway.security.access import Access, Principal

__all__ = ["Access", "Principal"]
