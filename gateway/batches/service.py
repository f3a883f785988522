"""The files and batches entries, behind the scope gate (`batch`), for the HTTP routes (gateway/http/
batches.py), and the batch work of one process (queue worker, maintenance) started and stopped with it.

A principal sees its own tenant's files and batches only: every lookup is by tenant and ID, and another
tenant's ID is answered like one that does not exist (404). Where the state lives: the gateway's
database (`database_url`), or without one the embedded store, SQLite in `batch_dir`, opened on the
first batch request (or at start when it exists already, to resume its batches).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.batches.crypto import Sealer
from gateway.batches.lines import AudioReader, LineRunner, RetryPolicy, error_record
from gateway.batches.maintenance import Maintenance
from gateway.batches.metrics import BatchMetrics
from gateway.batches.models import (
    COMPLETION_WINDOWS,
    ENDED,
    BatchList,
    BatchObject,
    FileDeleted,
    FileList,
    FileObject,
    NewBatchFields,
    RequestCounts,
)
from gateway.batches.parse import Limits, MalformedLine, ValidLine, parse_input
from gateway.batches.queue import JobQueue, LocalQueue, PostgresQueue
from gateway.batches.runner import (
    BatchRunner,
    chunks,
    file_label,
    principal_record,
    request_label,
    result_label,
)
from gateway.batches.store import FAILED, PENDING, TIMES, BatchRow, BatchStore, FileRow, new_id
from gateway.batches.webhooks import deliver
from gateway.context import RequestContext
from gateway.database import Database
from gateway.errors import ErrorType, SamoError, invalid_input, not_found
from gateway.operations import Operations
from gateway.operations.gate import admit_caller
from gateway.operations.registry import BY_PATH
from gateway.security.access import Access
from gateway.security.scopes import Scope
from gateway.validation import validate_body
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "batches.db"
RUNNER_LOCK = "batches.runner.lock"
BATCH_ENDPOINTS = tuple(path for path, op in BY_PATH.items() if op.takes != "live audio")
PROGRESS_POLL_S = 0.5


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_object(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at.timestamp()),
        expires_at=_epoch(row.expires_at),
        filename=row.filename,
        purpose=row.purpose,
    )


@dataclass
class Backend:
    store: BatchStore
    sealer: Sealer
    queue: JobQueue
    runner: BatchRunner
    maintenance: Maintenance | None
    database: Database
    own_database: bool


class BatchService:
    def __init__(
        self,
        settings: GatewaySettings,
        operations: Operations,
        database: Database | None,
        access: Access | None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.metrics = BatchMetrics(registry)
        self.settings = settings
        self.operations = operations
        self.database = database
        self.access = access
        self._backend: Backend | None = None
        self._opening = asyncio.Lock()

    # -- lifecycle --

    async def start(self) -> None:
        """Resume batch work at start when there is a store already (the embedded one is opened later,
        on the first batch request, when it does not exist yet)."""
        embedded = self.settings.batch_dir / EMBEDDED_DATABASE
        if self.database is not None or embedded.exists():
            await self.backend()

    async def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is None:
            return
        if backend.maintenance is not None:
            await backend.maintenance.stop()
        await backend.queue.close()
        if backend.own_database:
            backend.database.close()

    async def backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        async with self._opening:
            if self._backend is None:
                self._backend = await self._open()
        return self._backend

    async def _open(self) -> Backend:
        settings = self.settings
        database, own = self.database, False
        if database is None:
            settings.batch_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{(settings.batch_dir / EMBEDDED_DATABASE).resolve()}"
            database, own = await asyncio.to_thread(Database.open, url), True
        store = BatchStore(database)
        sealer = Sealer.from_settings(settings)
        queue: JobQueue
        if database.dialect == "postgresql":
            queue = await asyncio.to_thread(
                PostgresQueue, database, settings.batch_concurrency, settings.batch_stalled_after_s
            )
        else:
            lock = settings.batch_dir / RUNNER_LOCK
            if not own and database.engine.url.database:
                lock = _beside(database.engine.url.database, RUNNER_LOCK)
            queue = LocalQueue(store, lock, settings.batch_chunk_lines, settings.batch_concurrency)
        retry = RetryPolicy(settings.batch_max_attempts, settings.batch_retry_base_s)
        lines = LineRunner(
            self.operations, self._audio_reader(store, sealer), retry, self.access, self.metrics
        )
        runner = BatchRunner(store, sealer, lines, settings.batch_retention_s)
        maintenance = None
        if settings.batch_worker:
            await queue.start_worker(runner.run_chunk)
            notify = self._notify if settings.batch_webhook_secret is not None else None
            maintenance = Maintenance(
                store, runner, queue, settings.batch_chunk_lines, notify, settings.batch_stalled_after_s
            )
            maintenance.start()
        return Backend(store, sealer, queue, runner, maintenance, database, own)

    def _audio_reader(self, store: BatchStore, sealer: Sealer) -> AudioReader:
        async def read(tenant: str, file_id: str) -> bytes | None:
            row = await asyncio.to_thread(store.file, tenant, file_id)
            if row is None or row.purpose != "audio":
                return None
            sealed = await asyncio.to_thread(store.content, tenant, file_id)
            return sealer.open(sealed, file_label(file_id)) if sealed is not None else None

        return read

    async def _notify(self, batch: BatchRow) -> None:
        backend = await self.backend()
        secret = self.settings.batch_webhook_secret
        if batch.webhook_url is None or secret is None:
            return
        url = backend.sealer.open(batch.webhook_url, f"{batch.id}:webhook").decode()
        body = (await self._batch_object(backend, batch)).model_dump(mode="json")
        delivered = await deliver(url, secret.get_secret_value().encode(), body)
        if not delivered:
            logger.error("batch %s: webhook not delivered after every try", batch.id)
        await asyncio.to_thread(backend.store.webhook_sent, batch.id)

    # -- the gate --

    async def _tenant(self, context: RequestContext) -> str:
        await admit_caller(context, Scope.BATCH)
        return context.principal.tenant if context.principal is not None else ""

    # -- files --

    async def upload(self, context: RequestContext, filename: str, purpose: str, data: bytes) -> FileObject:
        tenant = await self._tenant(context)
        if purpose not in ("batch", "audio"):
            raise invalid_input(
                f"purpose: `batch` (a JSONL input file) or `audio` (a recording), not `{purpose[:32]}`"
            )
        if len(data) > self.settings.batch_max_file_bytes:
            raise SamoError(
                ErrorType.TOO_LARGE,
                f"file: over {self.settings.batch_max_file_bytes} bytes (SAMO_BATCH_MAX_FILE_BYTES)",
            )
        if not data:
            raise invalid_input("file: empty")
        backend = await self.backend()
        created = datetime.now(UTC)
        row = FileRow(
            id=new_id("file-"),
            tenant=tenant,
            purpose=purpose,
            filename=filename[:256] or "upload",
            bytes=len(data),
            created_at=created,
            expires_at=created + timedelta(seconds=self.settings.batch_retention_s),
            batch_id=None,
        )
        sealed = backend.sealer.seal(data, file_label(row.id))
        await asyncio.to_thread(backend.store.add_file, row, sealed)
        return file_object(row)

    async def files(
        self, context: RequestContext, purpose: str | None, after: str | None, limit: int
    ) -> FileList:
        tenant = await self._tenant(context)
        backend = await self.backend()
        rows = await asyncio.to_thread(backend.store.files, tenant, purpose, after, limit + 1)
        data = [file_object(row) for row in rows[:limit]]
        return FileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=len(rows) > limit,
        )

    async def _file(self, backend: Backend, tenant: str, file_id: str) -> FileRow:
        row = await asyncio.to_thread(backend.store.file, tenant, file_id)
        if row is None:
            raise not_found(f"no file with ID `{file_id[:64]}`")
        return row

    async def file(self, context: RequestContext, file_id: str) -> FileObject:
        tenant = await self._tenant(context)
        return file_object(await self._file(await self.backend(), tenant, file_id))

    async def delete_file(self, context: RequestContext, file_id: str) -> FileDeleted:
        tenant = await self._tenant(context)
        backend = await self.backend()
        if not await asyncio.to_thread(backend.store.delete_file, tenant, file_id):
            raise not_found(f"no file with ID `{file_id[:64]}`")
        return FileDeleted(id=file_id)

    async def content(self, context: RequestContext, file_id: str) -> tuple[bytes, FileRow]:
        tenant = await self._tenant(context)
        backend = await self.backend()
        row = await self._file(backend, tenant, file_id)
        sealed = await asyncio.to_thread(backend.store.content, tenant, file_id)
        if sealed is None:
            raise not_found(f"no file with ID `{file_id[:64]}`")
        return backend.sealer.open(sealed, file_label(file_id)), row

    # -- batches --

    async def create(self, context: RequestContext, fields: Any) -> BatchObject:
        tenant = await self._tenant(context)
        body = validate_body(NewBatchFields, fields)
        settings = self.settings
        operation = BY_PATH.get(body.endpoint)
        if operation is None or body.endpoint not in BATCH_ENDPOINTS:
            raise invalid_input(f"endpoint: one of {', '.join(BATCH_ENDPOINTS)}, not `{body.endpoint}`")
        window = COMPLETION_WINDOWS.get(body.completion_window)
        if window is None:
            raise invalid_input(f"completion_window: one of {', '.join(COMPLETION_WINDOWS)}")
        if body.webhook_url is not None and settings.batch_webhook_secret is None:
            raise invalid_input(
                "webhook_url: this gateway signs no webhooks (SAMO_BATCH_WEBHOOK_SECRET is unset)"
            )
        if context.principal is not None:
            context.principal.authorize(operation.scope)  # fail now, not on every line
        backend = await self.backend()
        store, sealer = backend.store, backend.sealer
        if await asyncio.to_thread(store.active, tenant) >= settings.batch_max_active:
            raise SamoError(
                ErrorType.RATE_LIMITED,
                f"this tenant has {settings.batch_max_active} batches not yet ended (SAMO_BATCH_MAX_ACTIVE); "
                "wait for one to end or cancel one",
                retry_after_s=60,
            )
        source = await self._file(backend, tenant, body.input_file_id)
        data = await self._input(backend, tenant, source)
        audio_ids: set[str] = set()
        if operation.takes != "json":
            audio = await asyncio.to_thread(store.files, tenant, "audio", None, 1_000_000)
            audio_ids = {row.id for row in audio}
        limits = Limits(settings.batch_max_lines, settings.batch_max_line_bytes)
        parsed = parse_input(
            data, body.endpoint, limits, audio_ids.__contains__ if operation.takes != "json" else None
        )
        batch_id = new_id("batch_")
        created = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for line in parsed:
            if isinstance(line, ValidLine):
                request = sealer.seal(
                    line.request.model_dump_json().encode(), request_label(batch_id, line.number)
                )
                rows.append(
                    {
                        "batch_id": batch_id,
                        "line": line.number,
                        "status": PENDING,
                        "request": request,
                        "result": None,
                    }
                )
            else:
                record = error_record(batch_id, line.number, line.custom_id, line.code, line.message)
                result = sealer.seal(json.dumps(record).encode(), result_label(batch_id, line.number))
                rows.append(
                    {
                        "batch_id": batch_id,
                        "line": line.number,
                        "status": FAILED,
                        "request": None,
                        "result": result,
                    }
                )
        times: dict[str, datetime | None] = {name: None for name in TIMES}
        times |= {"created_at": created, "expires_at": created + timedelta(seconds=window)}
        webhook = (
            sealer.seal(body.webhook_url.encode(), f"{batch_id}:webhook")
            if body.webhook_url is not None
            else None
        )
        row = BatchRow(
            id=batch_id,
            tenant=tenant,
            principal=principal_record(context.principal),
            endpoint=body.endpoint,
            input_file_id=source.id,
            completion_window=body.completion_window,
            status="validating",
            total=len(parsed),
            times=times,
            output_file_id=None,
            error_file_id=None,
            meta=body.metadata,
            webhook_url=webhook,
            webhook_sent_at=None,
        )
        await asyncio.to_thread(store.add_batch, row, rows)
        valid = [line.number for line in parsed if isinstance(line, ValidLine)]
        await backend.queue.enqueue(chunks(batch_id, valid, settings.batch_chunk_lines))
        await asyncio.to_thread(store.move, batch_id, "in_progress", ("validating",))
        malformed = sum(isinstance(line, MalformedLine) for line in parsed)
        logger.info("batch %s created: %d lines, %d malformed", batch_id, len(parsed), malformed)
        return await self._batch_object(backend, await self._batch(backend, tenant, batch_id))

    async def _input(self, backend: Backend, tenant: str, source: FileRow) -> bytes:
        """An input file's lines; for a batch's error file, the original requests of its lines that
        failed, were cancelled or expired ("retry failed lines": a new batch of them alone)."""
        store, sealer = backend.store, backend.sealer
        if source.purpose == "batch":
            sealed = await asyncio.to_thread(store.content, tenant, source.id)
            assert sealed is not None
            return sealer.open(sealed, file_label(source.id))
        if source.purpose == "batch_output" and source.batch_id is not None:
            earlier = await asyncio.to_thread(store.batch, source.batch_id, tenant)
            if earlier is not None and earlier.error_file_id == source.id:
                requests = await asyncio.to_thread(store.failed_requests, earlier.id)
                if not requests:
                    raise invalid_input(
                        f"input_file_id: the failed lines of `{earlier.id}` were all malformed; fix them and "
                        "upload a new file"
                    )
                return b"".join(
                    sealer.open(sealed, request_label(earlier.id, number)) + b"\n"
                    for number, sealed in requests
                )
        raise invalid_input(
            f"input_file_id: `{source.id}` has purpose `{source.purpose}`; use a `batch` file, or a batch's "
            "error file to retry its failed lines"
        )

    async def _batch(self, backend: Backend, tenant: str, batch_id: str) -> BatchRow:
        row = await asyncio.to_thread(backend.store.batch, batch_id, tenant)
        if row is None:
            raise not_found(f"no batch with ID `{batch_id[:64]}`")
        return row

    async def _batch_object(self, backend: Backend, row: BatchRow) -> BatchObject:
        counts = await asyncio.to_thread(backend.store.counts, row.id)
        completed = counts.get("ok", 0)
        failed = sum(counts.values()) - completed - counts.get(PENDING, 0)
        times = {name: _epoch(value) for name, value in row.times.items()}
        return BatchObject(
            id=row.id,
            endpoint=row.endpoint,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,  # pyright: ignore[reportArgumentType]  # the store keeps only these
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            request_counts=RequestCounts(total=row.total, completed=completed, failed=failed),
            metadata=row.meta,
            created_at=int(row.times["created_at"].timestamp()) if row.times["created_at"] else 0,
            in_progress_at=times["in_progress_at"],
            expires_at=times["expires_at"],
            finalizing_at=times["finalizing_at"],
            completed_at=times["completed_at"],
            failed_at=times["failed_at"],
            expired_at=times["expired_at"],
            cancelling_at=times["cancelling_at"],
            cancelled_at=times["cancelled_at"],
        )

    async def batch(self, context: RequestContext, batch_id: str) -> BatchObject:
        tenant = await self._tenant(context)
        backend = await self.backend()
        return await self._batch_object(backend, await self._batch(backend, tenant, batch_id))

    async def batches(self, context: RequestContext, after: str | None, limit: int) -> BatchList:
        tenant = await self._tenant(context)
        backend = await self.backend()
        rows = await asyncio.to_thread(backend.store.batches, tenant, after, limit + 1)
        data = [await self._batch_object(backend, row) for row in rows[:limit]]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=len(rows) > limit,
        )

    async def cancel(self, context: RequestContext, batch_id: str) -> BatchObject:
        """`cancelling` at once; no line starts after this, and the batch is `cancelled`, with the lines
        that finished in its output, within a maintenance tick (about a second)."""
        tenant = await self._tenant(context)
        backend = await self.backend()
        row = await self._batch(backend, tenant, batch_id)
        if row.status in ENDED or row.status == "finalizing":
            if row.status != "cancelled":
                raise SamoError(
                    ErrorType.INVALID_INPUT,
                    f"batch `{batch_id}` is {row.status}; only a running batch can be cancelled",
                )
        else:
            await asyncio.to_thread(backend.store.move, batch_id, "cancelling", ("validating", "in_progress"))
        return await self._batch_object(backend, await self._batch(backend, tenant, batch_id))

    async def progress(self, context: RequestContext, batch_id: str) -> AsyncIterator[BatchObject]:
        """The batch object now and each time its status or counts change, until it ends."""
        tenant = await self._tenant(context)
        backend = await self.backend()
        await self._batch(backend, tenant, batch_id)

        async def events() -> AsyncIterator[BatchObject]:
            last: tuple[object, ...] | None = None
            while True:
                row = await asyncio.to_thread(backend.store.batch, batch_id, tenant)
                if row is None:
                    return
                current = await self._batch_object(backend, row)
                key = (current.status, current.request_counts.completed, current.request_counts.failed)
                if key != last:
                    last = key
                    yield current
                if current.status in ENDED:
                    return
                await asyncio.sleep(PROGRESS_POLL_S)

        return events()


def _beside(database_path: str, name: str) -> Path:
    return Path(database_path).parent / name
