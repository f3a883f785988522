"""`samo worker`: a process that runs batch lines and nothing else (no HTTP, no gRPC), beside the
gateways, on the same queue (procrastinate on PostgreSQL). Scale these on queue depth; the gateways may
then run with `SAMO_BATCH_WORKER=false`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from gateway.batches import BatchService
from gateway.batches.child import die_with_parent
from gateway.database import Database
from gateway.observability.logging import configure_logging
from gateway.observability.metrics import gateway_registry
from gateway.operations import Operations
from gateway.operations.metering import Meter
from gateway.security import Access
from gateway.security.managed_keys import ManagedKeys
from gateway.services import Services
from gateway.usage import UsageLedger
from gateway.usage.metrics import TenantMetrics
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


async def work(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Run batch lines until `stop` is set; lines in progress when it is set are run again elsewhere."""
    if not settings.batch_worker:
        raise ValueError("`samo worker` runs batch lines: SAMO_BATCH_WORKER must not be false")
    registry = gateway_registry()
    database = Database.open(settings.database_url.get_secret_value()) if settings.database_url else None
    ledger = UsageLedger(database, registry=registry) if database is not None else None
    managed = ManagedKeys(database, settings.managed_keys_refresh_s) if database is not None else None
    access = Access.from_settings(settings, registry, managed)
    services = Services.open(settings)
    operations = Operations(services, Meter(TenantMetrics(registry, settings.metrics_max_tenants), ledger))
    batches = BatchService(settings, operations, database, access, registry)
    await access.start()
    if ledger is not None:
        await ledger.start()
    try:
        await batches.backend()
        logger.info("batch worker: running")
        await stop.wait()
    finally:
        logger.info("batch worker: stopping")
        await batches.close()
        if ledger is not None:
            await ledger.stop()
        await access.stop()
        await services.close()
        if database is not None:
            database.close()


def run_worker(settings: GatewaySettings) -> None:
    configure_logging(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await work(settings, stop)

    asyncio.run(main())


def main() -> None:
    """The embedded store's runner process (gateway.batches.child): `python -m gateway.worker <parent
    pid> <nice>` dies with its gateway and runs at that nice level."""
    parent, nice = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)
    os.nice(nice)
    run_worker(GatewaySettings())


if __name__ == "__main__":
    main()
