"""Prometheus counters per tenant, with bounded label cardinality: the first `max_tenants` tenants a
process sees get a label of their own, later ones share `other` (the ledger still has them all)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from gateway.observability.metrics import BoundedLabels
from gateway.usage.units import Units

OTHER = BoundedLabels.OTHER


class TenantMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_tenants: int = 100) -> None:
        self.max_tenants = max_tenants
        self.tenant_label = BoundedLabels(max_tenants)
        self._by_key: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}
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

    def count(self, tenant: str, operation: str, status: str, units: Units) -> None:
        requests, texts, tokens, audio = self._series(tenant, operation, status)
        requests.inc()
        if units.texts:
            texts.inc(units.texts)
        if units.tokens:
            tokens.inc(units.tokens)
        if units.audio_seconds:
            audio.inc(units.audio_seconds)

    def _series(self, tenant: str, operation: str, status: str) -> tuple[Any, Any, Any, Any]:
        """The labelled counters, kept: `labels()` costs as much as the increment, on every request."""
        label = self.tenant_label(tenant)
        key = (label, operation, status)
        series = self._by_key.get(key)
        if series is None:
            texts, tokens, audio = (
                self.units.labels(label, unit) for unit in ("texts", "tokens", "audio_seconds")
            )
            series = (self.requests.labels(label, operation, status), texts, tokens, audio)
            self._by_key[key] = series
        return series
