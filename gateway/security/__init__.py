"""Access to the gateway: API keys and per-key rate limits, decided once for both transports.

`access.py` decides; each transport applies it at its edge (`gateway/http/access.py`,
`gateway/grpc_api/access.py`); `api_keys.py` and `rate_limits.py` hold the keys and the counters. TLS
and CORS are wired where the servers are built (`gateway/main.py`, `gateway/grpc_api/server.py`,
`gateway/http/app.py`).
"""

from gateway.security.access import Access, Principal

__all__ = ["Access", "Principal"]
