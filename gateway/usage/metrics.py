"""Prometheus counters per tenant, with bounded label cardinality: the first `max_tenants` tenants a
process sees get a label of their own, later ones share `other` (the ledger still has them all)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from gateway.usage.units import Units

OTHER = "other"


class TenantMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_tenants: int = 100) -> None:
        self.max_tenants = max_tenants
        self._labelled: set[str] = set()
        self.requests = Counter(
            "samo_tenant_requests",
            "Answered requests by tenant (the first SAMO_METRICS_MAX_TENANTS, then `other`), operation and status.",
            ["tenant", "operation", "status"],
            registry=registry,
        )
        self.units = Counter(
            "samo_tenant_units",
            "Units used by tenant: texts, tokens, audio_seconds.",
            ["tenant", "unit"],
            registry=registry,
        )

    def tenant_label(self, tenant: str) -> str:
        if tenant in self._labelled:
            return tenant
        if len(self._labelled) < self.max_tenants:
            self._labelled.add(tenant)
            return tenant
        return OTHER

    def count(self, tenant: str, operation: str, status: str, units: Units) -> None:
        label = self.tenant_label(tenant)
        self.requests.labels(label, operation, status).inc()
        for unit, amount in (
            ("texts", units.texts),
            ("tokens", units.tokens),
            ("audio_seconds", units.audio_seconds),
        ):
            if amount:
                self.units.labels(label, unit).inc(amount)
