"""Quotas per tenant: requests, audio seconds, generated tokens and concurrent live sessions, counted
for the whole tenant (all its keys and users) in the rate limits' storage (Redis: across replicas); the
live sessions as leases (gateway/security/live_slots.py).

The default quota applies to every tenant without one of its own. When the storage cannot be reached,
requests are refused (503) unless `SAMO_QUOTA_STORAGE_FAILURE=allow`; either way it is logged and
counted (`samo_quota_storage_failures_total`).
"""

from __future__ import annotations

from collections.abc import Mapping

from limits.aio.storage import Storage
from prometheus_client import CollectorRegistry, Counter

from gateway.security.rate_limits import RateLimits, parse_limit
from samo.settings import GatewaySettings, QuotaSettings

NAME = "tenant quota"


class TenantQuotas:
    def __init__(
        self,
        default: QuotaSettings,
        by_tenant: Mapping[str, QuotaSettings],
        storage: Storage,
        *,
        fail_closed: bool,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.failures = Counter(
            "samo_quota_storage_failures",
            "Quota checks that could not reach the counters' storage (refused or let through, by policy).",
            registry=registry,
        )

        def limits(quota: QuotaSettings) -> RateLimits:
            return RateLimits(
                parse_limit("tenant_quota.requests", quota.requests),
                parse_limit("tenant_quota.audio_seconds", quota.audio_seconds),
                storage,
                generated_tokens=parse_limit("tenant_quota.generated_tokens", quota.generated_tokens),
                name=NAME,
                fail_closed=fail_closed,
                on_storage_failure=self.failures.inc,
            )

        self.fail_closed = fail_closed
        self.default = limits(default)
        self.by_tenant = {tenant: limits(quota) for tenant, quota in by_tenant.items()}
        self._live_sessions = {tenant: quota.live_sessions for tenant, quota in by_tenant.items()}
        self._default_live_sessions = default.live_sessions

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, storage: Storage, registry: CollectorRegistry | None = None
    ) -> TenantQuotas | None:
        default = settings.tenant_quota or QuotaSettings()
        quotas = (default, *settings.tenant_quotas.values())
        if not any(q.requests or q.audio_seconds or q.generated_tokens or q.live_sessions for q in quotas):
            return None
        return cls(
            default,
            settings.tenant_quotas,
            storage,
            fail_closed=settings.quota_storage_failure == "refuse",
            registry=registry,
        )

    def of(self, tenant: str) -> RateLimits:
        return self.by_tenant.get(tenant, self.default)

    def live_sessions(self, tenant: str) -> int | None:
        """The tenant's concurrent live sessions quota (gateway/security/live_slots.py), or None."""
        return self._live_sessions.get(tenant, self._default_live_sessions)

    def live_sessions_key(self, tenant: str) -> str:
        return _key(tenant)

    async def admit(self, tenant: str, generates: bool) -> None:
        """Count one request; refused while the requests quota is spent, or, for a request that
        `generates` tokens, the generated-tokens quota."""
        limits = self.of(tenant)
        await limits.hit_request(_key(tenant))
        if generates:
            await limits.check_tokens(_key(tenant))

    async def charge_audio(self, tenant: str, seconds: float) -> None:
        await self.of(tenant).charge_audio(_key(tenant), seconds)

    async def charge_tokens(self, tenant: str, tokens: int) -> None:
        await self.of(tenant).charge_tokens(_key(tenant), tokens)


def _key(tenant: str) -> str:
    return f"tenant:{tenant}"
