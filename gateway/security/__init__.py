"""Access to the gateway: API keys, per-key rate limits, and the caller of the current request.

`access.py` decides (both transports), `http.py` and `grpc.py` apply it at each transport's edge,
`api_keys.py` and `rate_limits.py` hold the keys and the counters. TLS and CORS are wired where the
servers are built (`gateway/main.py`, `gateway/grpc_api/server.py`, `gateway/http/app.py`).
"""

from gateway.security.access import Access, Principal, charge_audio_seconds, current_principal

__all__ = ["Access", "Principal", "charge_audio_seconds", "current_principal"]
