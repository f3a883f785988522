"""Where a batch's jobs wait for a worker: procrastinate on PostgreSQL, or the database itself for the
embedded SQLite default.

**PostgreSQL** (`PostgresQueue`): each batch is cut into jobs of `batch_chunk_lines` lines, deferred to
procrastinate's queue `samo_batches` in the same database; every process with `batch_worker` on (gateway
replicas, `samo worker`) runs a procrastinate worker on it, so they share one queue. Procrastinate takes a
job with `SELECT ... FOR UPDATE SKIP LOCKED` (one worker per job), and each worker writes a heartbeat; a
worker killed with SIGKILL stops writing it, and after `batch_stalled_after_s` its jobs are stalled:
the maintenance loop of any live process puts them back (`recover`), and the next worker runs the job
again, skipping the lines already written.

**SQLite** (`LocalQueue`): there is no queue server, and SQLite has no `SKIP LOCKED`; the pending lines
in `batch_lines` are the queue. One process per database runs them, elected by an exclusive lock on a
file beside it (`batches.runner.lock`): the lock dies with its process, SIGKILL included, and another
process of the same machine (a gateway worker process, a restarted gateway) takes it within seconds and
starts from the lines still pending. Nothing is lost because nothing is held only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.batches.runner import Chunk, chunks
from gateway.batches.store import BatchStore
from gateway.database import Database

logger = logging.getLogger(__name__)

QUEUE = "samo_batches"
TASK = "samo.batch_chunk"
SCHEMA_LOCK = 0x5A4D0_24
RunChunk = Callable[[Chunk], Coroutine[Any, Any, None]]


class JobQueue(Protocol):
    async def enqueue(self, jobs: list[Chunk]) -> None: ...

    async def start_worker(self, run: RunChunk) -> None:
        """Run jobs in this process (in the background) until `close`."""
        ...

    async def recover(self) -> int:
        """Jobs of dead workers put back in the queue; how many."""
        ...

    async def with_jobs(self, batch_ids: set[str]) -> set[str]:
        """Those of `batch_ids` with a job waiting or running (the maintenance loop queues the pending
        lines of a batch that has none again)."""
        ...

    async def close(self) -> None: ...


class LocalQueue:
    """The embedded queue: the pending lines in SQLite, run by the one process holding the lock file."""

    def __init__(self, store: BatchStore, lock_path: Path, chunk_lines: int, concurrency: int) -> None:
        self.store = store
        self.lock_path = lock_path
        self.chunk_lines = chunk_lines
        self.concurrency = concurrency
        self.poll_s = 0.5
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock: IO[str] | None = None
        self._running: dict[asyncio.Task[None], tuple[str, frozenset[int]]] = {}

    async def enqueue(self, jobs: list[Chunk]) -> None:
        self._wake.set()  # the lines are in the database already

    async def start_worker(self, run: RunChunk) -> None:
        self._task = asyncio.create_task(self._work(run))

    async def recover(self) -> int:
        return 0  # a dead runner's lines are still pending: the next lock holder runs them

    async def with_jobs(self, batch_ids: set[str]) -> set[str]:
        return batch_ids  # the pending lines are the queue

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None

    def _try_lock(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.lock_path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        return True

    async def _work(self, run: RunChunk) -> None:
        while not self._try_lock():
            await asyncio.sleep(2.0)
        logger.info("batch runner: this process runs the embedded queue's lines")
        while True:
            await self._fill(run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def _fill(self, run: RunChunk) -> None:
        for batch in await asyncio.to_thread(self.store.in_status, ("in_progress",)):
            if len(self._running) >= self.concurrency:
                return
            busy = {
                line for batch_id, lines in self._running.values() if batch_id == batch.id for line in lines
            }
            pending = [
                n for n in await asyncio.to_thread(self.store.pending_lines, batch.id) if n not in busy
            ]
            for chunk in chunks(batch.id, pending, self.chunk_lines):
                if len(self._running) >= self.concurrency:
                    return
                lines = frozenset(n for n in pending if chunk.first <= n <= chunk.last)
                task = asyncio.create_task(run(chunk))
                self._running[task] = (batch.id, lines)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.error("batch job failed: %s", type(error).__name__, exc_info=error)
        self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def ensure_procrastinate_schema(database: Database) -> None:
    """procrastinate's tables, created once (under an advisory lock, as replicas start together)."""
    from procrastinate.schema import SchemaManager

    with database.engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        present = connection.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        if present is None:
            # psycopg itself, without parameters: the schema's `%` are PL/pgSQL's, not placeholders.
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute(SchemaManager.get_schema())
            logger.info("batch queue: procrastinate schema created")


def libpq_url(database: Database) -> str:
    """The database's URL as libpq reads it (procrastinate connects with psycopg directly)."""
    url = make_url(database.engine.url.render_as_string(hide_password=False))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresQueue:
    """Jobs in procrastinate's queue, on the gateway's PostgreSQL (see the module doc)."""

    def __init__(self, database: Database, concurrency: int, stalled_after_s: float) -> None:
        from procrastinate import App, PsycopgConnector, RetryStrategy

        ensure_procrastinate_schema(database)
        self.app = App(connector=PsycopgConnector(conninfo=libpq_url(database), min_size=1, max_size=4))
        self.concurrency = concurrency
        self.stalled_after_s = stalled_after_s
        self._run: RunChunk | None = None
        self._worker: asyncio.Task[Any] | None = None
        self._opened = False

        async def batch_chunk(batch_id: str, first: int, last: int) -> None:
            if self._run is None:
                raise RuntimeError("a batch job reached a process that runs no batch worker")
            await self._run(Chunk(batch_id, first, last))

        # Exceptions (a database gone for a moment) retry the job; a dead worker's job is `recover`ed.
        retry = RetryStrategy(max_attempts=10, exponential_wait=2)
        self.task = self.app.task(name=TASK, queue=QUEUE, retry=retry)(batch_chunk)

    async def _open(self) -> None:
        if not self._opened:
            await self.app.open_async()
            self._opened = True

    async def enqueue(self, jobs: list[Chunk]) -> None:
        await self._open()
        arguments: list[dict[str, Any]] = [
            {"batch_id": job.batch_id, "first": job.first, "last": job.last} for job in jobs
        ]
        for start in range(0, len(arguments), 500):
            await self.task.batch_defer_async(*arguments[start : start + 500])

    async def start_worker(self, run: RunChunk) -> None:
        await self._open()
        self._run = run
        self._worker = asyncio.create_task(
            self.app.run_worker_async(
                queues=[QUEUE],
                concurrency=self.concurrency,
                install_signal_handlers=False,
                update_heartbeat_interval=self.stalled_after_s / 3,
                stalled_worker_timeout=self.stalled_after_s,
                fetch_job_polling_interval=1.0,
                delete_jobs="successful",
            )
        )

    async def recover(self) -> int:
        await self._open()
        manager = self.app.job_manager
        stalled = list(
            await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.stalled_after_s)
        )
        recovered = 0
        for job in stalled:
            try:
                await manager.retry_job(job)
                recovered += 1
            except Exception as exc:  # another process put it back first
                logger.debug("stalled job %s not retried here: %s", job.id, type(exc).__name__)
        if recovered:
            logger.warning("batch queue: %d jobs of dead workers put back in the queue", recovered)
        return recovered

    async def with_jobs(self, batch_ids: set[str]) -> set[str]:
        if not batch_ids:
            return set()
        await self._open()
        rows = await self.app.connector.execute_query_all_async(
            "SELECT DISTINCT args->>'batch_id' AS batch_id FROM procrastinate_jobs "
            "WHERE queue_name = %(queue)s AND status IN ('todo', 'doing') "
            "AND args->>'batch_id' = ANY(%(batch_ids)s)",
            queue=QUEUE,
            batch_ids=list(batch_ids),
        )
        return {row["batch_id"] for row in rows}

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._opened:
            await self.app.close_async()
            self._opened = False
