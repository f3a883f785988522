"""Metrics labelled by what callers choose (tenants, key names) keep a bounded number of series: the
first ones get their own, later ones share `other`, and nothing is left uncounted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.security.access import Access
from gateway.security.api_keys import ApiKeys
from gateway.security.rate_limits import RateLimits, open_storage
from gateway.usage.metrics import TenantMetrics
from gateway.usage.units import Units


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_tenant_counters_keep_the_first_tenants_and_pool_the_rest() -> None:
    registry = CollectorRegistry()
    metrics = TenantMetrics(registry, max_tenants=2)
    for tenant in ("acme", "globex", "initech", "umbrella", "acme"):
        metrics.count(tenant, "emotions", "ok", Units(texts=1))
    counted = _samples(registry, "samo_tenant_requests_total")
    assert {labels[2][1]: value for labels, value in counted.items()} == {"acme": 2, "globex": 1, "other": 2}


def test_access_counters_label_at_most_the_configured_number_of_callers(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("".join(f"caller{i}:key-{i}-0123456789abcdef\n" for i in range(5)))
    registry = CollectorRegistry()
    access = Access(
        ApiKeys(keys_file), RateLimits((), (), open_storage("memory://")), registry=registry, max_labels=3
    )

    async def admit_each() -> None:
        for i in range(5):
            await access.admit(f"Bearer key-{i}-0123456789abcdef", None, "127.0.0.1")

    asyncio.run(admit_each())
    admitted = {
        dict(labels)["key"]: value
        for labels, value in _samples(registry, "samo_access_requests_total").items()
    }
    assert admitted == {"caller0": 1, "caller1": 1, "caller2": 1, "other": 2}
