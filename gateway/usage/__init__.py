"""The usage ledger: one row per answered request, by tenant, in the gateway's database (`ledger.py`);
what a result used (`units.py`); Prometheus counters per tenant with bounded labels (`metrics.py`).

The ledger is the source of truth for billing and capacity; the limiter's Redis counters are only its
fast path. No journal text or audio goes in: units and names only.
"""

from gateway.usage.ledger import UsageLedger, UsageRecord

__all__ = ["UsageLedger", "UsageRecord"]
