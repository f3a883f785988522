"""Who is calling, and whether they may: API keys and rate limits for both transports.

`Access.admit` turns a request's credentials into a `Principal` (the key's name, or the client's
address when no keys are configured) and counts it against the rate limits. The transports' access
checks (gateway/http/access.py, gateway/grpc_api/access.py) put it in the request's context
(gateway/context.py), through which the transcription path charges decoded audio (`charge_audio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from gateway.errors import ErrorType, SamoError
from gateway.security.api_keys import ApiKeys, KeyFileError
from gateway.security.rate_limits import RateLimits, open_storage, parse_limit
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

MISSING_KEY = "an API key is required: send `Authorization: Bearer <key>` (or `X-API-Key: <key>`)"
UNKNOWN_KEY = "the API key is not valid"
NOT_BEARER = "authorization: expected `Bearer <key>`"


@dataclass(frozen=True)
class Principal:
    """The caller: an API key's name, or a client address when the gateway runs without keys."""

    name: str
    authenticated: bool

    @property
    def label(self) -> str:
        """For metrics labels: the key's name; addresses would make one series per client."""
        return self.name if self.authenticated else "anonymous"

    @property
    def counter_key(self) -> str:
        return f"key:{self.name}" if self.authenticated else f"address:{self.name}"


def _presented_key(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise SamoError(ErrorType.UNAUTHENTICATED, NOT_BEARER)
        return credentials.strip()
    return api_key.strip() if api_key else None


class Access:
    """API keys (optional), rate limits (optional) and their metrics, for one gateway."""

    def __init__(
        self,
        keys: ApiKeys | None,
        limits: RateLimits,
        *,
        reload_interval_s: float = 2.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.reload_interval_s = reload_interval_s
        self.requests = Counter(
            "samo_access_requests", "Requests admitted, by API key name.", ["key"], registry=registry
        )
        self.rejections = Counter(
            "samo_access_rejections",
            "Requests refused, by reason (unauthenticated, rate_limited, audio_rate_limited) and API key name.",
            ["reason", "key"],
            registry=registry,
        )
        self._watch: asyncio.Task[None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings, registry: CollectorRegistry | None = None) -> Access:
        """Fails with a message naming the setting (never a key) when the settings cannot be used."""
        keys = None
        if settings.api_keys_file is not None:
            try:
                keys = ApiKeys(settings.api_keys_file)
            except (OSError, UnicodeDecodeError, KeyFileError) as exc:
                reason = exc if isinstance(exc, KeyFileError) else type(exc).__name__
                raise ValueError(f"api_keys_file {settings.api_keys_file}: {reason}") from None
            logger.info(
                "API keys from %s: %d keys (%s)",
                settings.api_keys_file,
                len(keys.names),
                ", ".join(keys.names),
            )
        else:
            logger.warning(
                "SAMO_API_KEYS_FILE is not set: the gateway answers anyone who can reach it "
                "(rate limits, if any, count per client address)"
            )
        limits = RateLimits(
            parse_limit("rate_limit", settings.rate_limit),
            parse_limit("audio_rate_limit", settings.audio_rate_limit),
            open_storage(settings.rate_limit_storage),
        )
        return cls(keys, limits, reload_interval_s=settings.api_keys_reload_s, registry=registry)

    def authenticate(self, authorization: str | None, api_key: str | None, client: str | None) -> Principal:
        """The caller, or `unauthenticated`. Without keys configured, anyone, named by address."""
        if self.keys is None:
            return Principal(client or "unknown", authenticated=False)
        try:
            presented = _presented_key(authorization, api_key)
        except SamoError:
            self.rejections.labels("unauthenticated", "").inc()
            raise
        name = self.keys.name_for(presented) if presented else None
        if name is None:
            self.rejections.labels("unauthenticated", "").inc()
            raise SamoError(ErrorType.UNAUTHENTICATED, UNKNOWN_KEY if presented else MISSING_KEY)
        return Principal(name, authenticated=True)

    async def admit(self, authorization: str | None, api_key: str | None, client: str | None) -> Principal:
        """Authenticate, then count the request against the rate limit."""
        principal = self.authenticate(authorization, api_key, client)
        try:
            await self.limits.hit_request(principal.counter_key)
        except SamoError:
            self.rejections.labels("rate_limited", principal.label).inc()
            raise
        self.requests.labels(principal.label).inc()
        return principal

    async def charge_audio(self, principal: Principal, seconds: float) -> None:
        """Count `seconds` more of the caller's audio against its audio rate limit; `rate_limited` when
        spent. The transcription path calls it (through the request's context) where it learns an
        upload's duration, before Triton work: the duration the container declares, then any audio
        decoded beyond it (files that declare none, such as browsers' WebM, are charged as they decode).
        Without `SAMO_AUDIO_RATE_LIMIT`, it does nothing."""
        try:
            await self.limits.charge_audio(principal.counter_key, seconds)
        except SamoError:
            self.rejections.labels("audio_rate_limited", principal.label).inc()
            raise

    async def start(self) -> None:
        """Reload the key file when it changes, and on SIGHUP where this thread may take signals."""
        if self.keys is None:
            return
        self._watch = asyncio.create_task(self.keys.watch(self.reload_interval_s))
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.keys.reload)
        except (RuntimeError, ValueError):  # not the main thread (a gateway inside tests or another app)
            logger.info("API keys reload on change only: SIGHUP is handled by the main thread")
        else:
            self._signal_loop = loop

    async def stop(self) -> None:
        if self._signal_loop is not None:
            self._signal_loop.remove_signal_handler(signal.SIGHUP)
            self._signal_loop = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
