"""The usage ledger: rows queued by the operations, written in batches by one task per process.

Written idempotently: a row is keyed by (tenant, request ID), so a client's retry with the same
`X-Request-ID` stays one row; an answer that succeeds replaces an earlier failure of the same request,
never the reverse. Rows wait in memory at most `flush_interval_s` (and are written at shutdown); a
database that cannot be reached keeps them queued, up to `MAX_QUEUED`, and says so in the log and in
`samo_usage_rows_dropped_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Insert, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from gateway.database import Database
from gateway.database.tables import usage
from gateway.results import UsageRow

logger = logging.getLogger(__name__)

MAX_QUEUED = 100_000
GROUPS = ("tenant", "operation", "model", "status", "day")


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    tenant: str
    principal: str
    operation: str
    model: str
    model_version: str
    texts: int
    tokens: int
    audio_seconds: float
    status: str
    at: datetime


def _upsert(dialect: str, rows: Sequence[dict[str, object]]) -> Insert:
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(usage).values(list(rows))
    replaced = {name: statement.excluded[name] for name in rows[0] if name not in ("tenant", "request_id")}
    return statement.on_conflict_do_update(
        index_elements=["tenant", "request_id"],
        set_=replaced,
        where=(usage.c.status != "ok") & (statement.excluded.status == "ok"),
    )


def _deduplicated(records: Sequence[UsageRecord]) -> list[dict[str, object]]:
    """One row per (tenant, request ID) within a batch (a statement may not touch a row twice): a
    success wins over a failure, else the first."""
    rows: dict[tuple[str, str], UsageRecord] = {}
    for record in records:
        key = (record.tenant, record.request_id)
        if key not in rows or (rows[key].status != "ok" and record.status == "ok"):
            rows[key] = record
    return [asdict(record) for record in rows.values()]


class UsageLedger:
    def __init__(
        self, database: Database, *, flush_interval_s: float = 0.25, registry: CollectorRegistry | None = None
    ) -> None:
        self.database = database
        self.flush_interval_s = flush_interval_s
        self._queue: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._flushing = asyncio.Lock()
        self.dropped = Counter(
            "samo_usage_rows_dropped",
            "Usage rows dropped because the database stayed unreachable and the queue was full.",
            registry=registry,
        )

    def record(self, record: UsageRecord) -> None:
        """Queue one row (no I/O on the request's path)."""
        if len(self._queue) >= MAX_QUEUED:
            self.dropped.inc()
            return
        self._queue.append(record)
        if len(self._queue) >= 500:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every queued row; on failure they stay queued for the next try. When it returns, every
        row queued before the call is written (or queued again after a failure): a flush already under
        way is waited for, since it may hold them (a batch line writes its row before its result)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            await asyncio.to_thread(self._write, batch)
        except SQLAlchemyError as exc:
            self._queue = batch + self._queue
            if not self._failing:
                logger.warning(
                    "usage rows not written, %d kept for the next try: %s", len(batch), type(exc).__name__
                )
                self._failing = True
            return
        if self._failing:
            logger.info("usage rows written again")
            self._failing = False

    def _write(self, batch: Sequence[UsageRecord]) -> None:
        rows = _deduplicated(batch)
        with self.database.engine.begin() as connection:
            for start in range(0, len(rows), 500):
                connection.execute(_upsert(self.database.dialect, rows[start : start + 500]))

    async def report(
        self, start: datetime, end: datetime, group_by: Sequence[str], tenant: str | None
    ) -> list[UsageRow]:
        """Requests and units between `start` (included) and `end` (excluded), grouped; `tenant` alone
        when given."""
        await self.flush()
        return await asyncio.to_thread(self._report, start, end, tuple(group_by), tenant)

    def _report(
        self, start: datetime, end: datetime, group_by: tuple[str, ...], tenant: str | None
    ) -> list[UsageRow]:
        if self.database.dialect == "postgresql":
            day = func.to_char(func.timezone("UTC", usage.c.at), "YYYY-MM-DD")
        else:  # SQLite keeps times as ISO text, and every time stored is UTC
            day = func.substr(usage.c.at, 1, 10)
        columns = {
            "tenant": usage.c.tenant,
            "operation": usage.c.operation,
            "model": usage.c.model,
            "status": usage.c.status,
            "day": day,
        }
        keys = [columns[name].label(name) for name in group_by]
        query = (
            select(
                *keys,
                func.count().label("requests"),
                func.coalesce(func.sum(usage.c.texts), 0).label("texts"),
                func.coalesce(func.sum(usage.c.tokens), 0).label("tokens"),
                func.coalesce(func.sum(usage.c.audio_seconds), 0.0).label("audio_seconds"),
            )
            .where(usage.c.at >= start, usage.c.at < end)
            .group_by(*keys)
            .order_by(*keys)
        )
        if tenant is not None:
            query = query.where(usage.c.tenant == tenant)
        with self.database.engine.connect() as connection:
            return [UsageRow.model_validate(dict(row._mapping)) for row in connection.execute(query)]


def now() -> datetime:
    return datetime.now(UTC)
