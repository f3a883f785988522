"""Who is calling, and whether they may: API keys, bearer tokens and rate limits for both transports.

`Access.admit` turns a request's credentials into a `Principal` (a key of the keys file, a managed key,
a token of a configured issuer, or the client's address when no credentials are configured) and counts
it against the rate limits. What the principal may call is decided later, by the operation's own gate
(`Principal.authorize`, gateway/operations). The transports' access
checks (gateway/http/access.py, gateway/grpc_api/access.py) put it in the request's context
(gateway/context.py), through which the transcription path charges decoded audio (`charge_audio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Counter

from gateway.errors import ErrorType, SamoError
from gateway.observability.metrics import BoundedLabels
from gateway.security.api_keys import ApiKeys, KeyFileError
from gateway.security.live_slots import LiveSlots, SlotLimit
from gateway.security.managed_keys import ManagedKeys
from gateway.security.principal import Credential, Principal
from gateway.security.quotas import TenantQuotas
from gateway.security.rate_limits import RateLimits, open_storage, parse_limit
from gateway.security.scopes import GENERATING_SCOPES, Scope
from gateway.security.tokens import TokenVerifier, looks_like_token
from samo.settings import GatewaySettings

__all__ = ["Access", "Principal"]

logger = logging.getLogger(__name__)

MISSING_KEY = "an API key is required: send `Authorization: Bearer <key>` (or `X-API-Key: <key>`)"
UNKNOWN_KEY = "the API key is not valid"
NOT_BEARER = "authorization: expected `Bearer <key>`"
MISSING_CREDENTIAL = "a bearer token or API key is required: send `Authorization: Bearer <token or key>` (or `X-API-Key: <key>`)"


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
        tokens: TokenVerifier | None = None,
        managed: ManagedKeys | None = None,
        quotas: TenantQuotas | None = None,
        live_slots: LiveSlots | None = None,
        live_limits: RateLimits | None = None,
        live_sessions_per_key: int = 0,
        reload_interval_s: float = 2.0,
        registry: CollectorRegistry | None = None,
        max_labels: int = 100,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.tokens = tokens
        self.managed = managed
        self.quotas = quotas
        self.live_slots = live_slots or LiveSlots.open(None, 30.0)
        """Concurrent live sessions: the tenants' `live_sessions` quota and `live_sessions_per_key`."""
        self.live_limits = live_limits
        """`realtime_audio_rate_limit`: live audio seconds per principal."""
        self.live_sessions_per_key = live_sessions_per_key
        self.reload_interval_s = reload_interval_s
        # A token's or managed key's label is its tenant's: bounded like the tenant metrics.
        self.label = BoundedLabels(max_labels)
        self.requests = Counter(
            "samo_access_requests",
            "Requests admitted, by API key name (tenant for tokens and managed keys; the first "
            "SAMO_METRICS_MAX_TENANTS, then `other`).",
            ["key"],
            registry=registry,
        )
        self.rejections = Counter(
            "samo_access_rejections",
            "Requests refused, by reason (unauthenticated, forbidden, rate_limited, audio_rate_limited, "
            "over_quota, upstream_unavailable) and API key name.",
            ["reason", "key"],
            registry=registry,
        )
        self._watch: asyncio.Task[None] | None = None
        self._managed_watch: asyncio.Task[None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        registry: CollectorRegistry | None = None,
        managed: ManagedKeys | None = None,
    ) -> Access:
        """Fails with a message naming the setting (never a key) when the settings cannot be used.
        `managed`: the database's API keys, when the gateway has a database."""
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
        tokens = TokenVerifier(settings.oidc_issuers, settings) if settings.oidc_issuers else None
        if tokens is not None:
            logger.info("bearer tokens of %s", ", ".join(tokens.issuers))
        if keys is None and tokens is None and managed is None:
            logger.warning(
                "SAMO_API_KEYS_FILE is not set: the gateway answers anyone who can reach it "
                "(rate limits, if any, count per client address)"
            )
        storage = open_storage(settings.rate_limit_storage)
        limits = RateLimits(
            parse_limit("rate_limit", settings.rate_limit),
            parse_limit("audio_rate_limit", settings.audio_rate_limit),
            storage,
        )
        live_limits = RateLimits(
            (),
            parse_limit("realtime_audio_rate_limit", settings.realtime_audio_rate_limit),
            storage,
            name="live rate limit",
        )
        quotas = TenantQuotas.from_settings(settings, storage, registry)
        live_slots = LiveSlots.open(
            settings.rate_limit_storage,
            settings.realtime_session_lease_s,
            retry_after_s=settings.retry_after_s,
            on_storage_failure=quotas.failures.inc if quotas is not None else None,
        )
        return cls(
            keys,
            limits,
            tokens=tokens,
            managed=managed,
            quotas=quotas,
            live_slots=live_slots,
            live_limits=live_limits if live_limits.enabled else None,
            live_sessions_per_key=settings.realtime_max_sessions_per_key,
            reload_interval_s=settings.api_keys_reload_s,
            registry=registry,
            max_labels=settings.metrics_max_tenants,
        )

    @property
    def required(self) -> bool:
        """Whether callers need a credential: any kind of credential is configured."""
        return self.keys is not None or self.tokens is not None or self.managed is not None

    async def authenticate(
        self, authorization: str | None, api_key: str | None, client: str | None
    ) -> Principal:
        """The caller, or `unauthenticated`. Without credentials configured, anyone, named by address."""
        if not self.required:
            return Principal(client or "unknown", authenticated=False)
        try:
            presented = _presented_key(authorization, api_key)
            if not presented:
                raise SamoError(
                    ErrorType.UNAUTHENTICATED, MISSING_KEY if self.tokens is None else MISSING_CREDENTIAL
                )
            return await self._principal(presented)
        except SamoError as error:
            if error.type is ErrorType.UNAUTHENTICATED:
                self.rejections.labels("unauthenticated", "").inc()
            raise

    async def _principal(self, presented: str) -> Principal:
        if self.tokens is not None and looks_like_token(presented):
            return await self.tokens.principal(presented)
        if self.managed is not None and self.managed.recognises(presented):
            principal = self.managed.principal_for(presented)
            if principal is not None:
                return principal
        name = self.keys.name_for(presented) if self.keys is not None else None
        if name is None:
            raise SamoError(ErrorType.UNAUTHENTICATED, UNKNOWN_KEY)
        # The keys file is the operator's: each key its own tenant, allowed everything (as before scopes).
        return Principal(
            name, authenticated=True, tenant=name, scopes=frozenset(Scope), credential=Credential.KEY_FILE
        )

    async def admit(self, authorization: str | None, api_key: str | None, client: str | None) -> Principal:
        """Authenticate, then count the request against the rate limit."""
        principal = await self.authenticate(authorization, api_key, client)
        try:
            await self.limits.hit_request(principal.counter_key)
        except SamoError:
            self.rejections.labels("rate_limited", self.label(principal.label)).inc()
            raise
        self.requests.labels(self.label(principal.label)).inc()
        return principal

    async def charge_audio(self, principal: Principal, seconds: float) -> None:
        """Count `seconds` more of the caller's audio against its audio rate limit; `rate_limited` when
        spent. The transcription path calls it (through the request's context) where it learns an
        upload's duration, before Triton work: the duration the container declares, then any audio
        decoded beyond it (files that declare none, such as browsers' WebM, are charged as they decode).
        Without `SAMO_AUDIO_RATE_LIMIT`, it does nothing."""
        try:
            await self.limits.charge_audio(principal.counter_key, seconds)
            if self.quotas is not None and principal.authenticated:
                await self.quotas.charge_audio(principal.tenant, seconds)
        except SamoError as error:
            self.rejections.labels(_reason(error, "audio_rate_limited"), self.label(principal.label)).inc()
            raise

    async def charge_live_audio(self, principal: Principal, seconds: float) -> None:
        """`charge_audio` for a live session's audio as it arrives, first against the caller's own live
        audio limit (`realtime_audio_rate_limit`), then as any audio: the caller's audio rate limit and
        its tenant's `audio_seconds` quota."""
        if self.live_limits is not None:
            try:
                await self.live_limits.charge_audio(f"live:{principal.counter_key}", seconds)
            except SamoError as error:
                self.rejections.labels(
                    _reason(error, "audio_rate_limited"), self.label(principal.label)
                ).inc()
                raise
        await self.charge_audio(principal, seconds)

    def live_session(self, principal: Principal) -> contextlib.AbstractAsyncContextManager[None]:
        """A live session's slots for the block: one of its tenant's `live_sessions` quota and one of
        the caller's `realtime_max_sessions_per_key`, across replicas (gateway/security/live_slots.py);
        `rate_limited` when either is full."""
        limits: list[SlotLimit] = []
        quota = (
            self.quotas.live_sessions(principal.tenant) if self.quotas and principal.authenticated else None
        )
        if quota and self.quotas is not None:
            limits.append(
                SlotLimit(
                    f"{self.quotas.live_sessions_key(principal.tenant)}:sessions",
                    quota,
                    f"tenant quota of {quota} concurrent live sessions reached; close one first",
                    fail_closed=self.quotas.fail_closed,
                )
            )
        if self.live_sessions_per_key:
            limit = self.live_sessions_per_key
            limits.append(
                SlotLimit(
                    f"{principal.counter_key}:sessions",
                    limit,
                    f"at most {limit} live sessions may be open at once per API key; close one first",
                    fail_closed=False,
                )
            )
        return self._counted_slots(principal, limits)

    @contextlib.asynccontextmanager
    async def _counted_slots(self, principal: Principal, limits: list[SlotLimit]) -> AsyncIterator[None]:
        """The slots, refusals counted in `samo_access_rejections_total` (`over_quota`, `rate_limited`)."""
        entered = False
        try:
            async with self.live_slots.held(limits):
                entered = True
                yield
        except SamoError as error:
            if not entered:
                tenant_full = error.type is ErrorType.RATE_LIMITED and error.message.startswith("tenant")
                reason = "over_quota" if tenant_full else _reason(error, "rate_limited")
                self.rejections.labels(reason, self.label(principal.label)).inc()
            raise

    async def hit_quota(self, principal: Principal, scope: Scope) -> None:
        """Count one operation against the caller's tenant quota (the operations' gate calls it: the
        quotas count model work, not `/metrics` scrapes or usage queries); `rate_limited` when spent,
        UNAVAILABLE when the counters cannot be reached and the quotas fail closed."""
        if self.quotas is None or not principal.authenticated:
            return
        try:
            await self.quotas.admit(principal.tenant, generates=scope in GENERATING_SCOPES)
        except SamoError as error:
            self.rejections.labels(_reason(error, "over_quota"), self.label(principal.label)).inc()
            raise

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Count `tokens` a model generated for the caller against its tenant's quota (the operations'
        metering calls it once a result is known; never refuses: the next request is refused instead)."""
        if self.quotas is not None and principal.authenticated:
            await self.quotas.charge_tokens(principal.tenant, tokens)

    async def start(self) -> None:
        """Read the managed keys and keep them fresh; reload the key file when it changes, and on SIGHUP
        where this thread may take signals."""
        await self.live_slots.start()
        if self.managed is not None:
            await self.managed.refresh()
            self._managed_watch = asyncio.create_task(self.managed.watch())
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
        for task in (self._watch, self._managed_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch = self._managed_watch = None
        await self.live_slots.stop()


def _reason(error: SamoError, limited: str) -> str:
    """The rejection's metrics reason: `limited` when over a limit, else what kept it from being counted."""
    return limited if error.type in (ErrorType.RATE_LIMITED, ErrorType.TOO_LARGE) else error.type.value
