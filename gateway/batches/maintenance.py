"""What keeps batches moving besides their jobs, run every second by each process that runs batch work
(any number of them at once: every step is a conditional update, so two processes doing the same step
change nothing twice):

- jobs of dead workers back to the queue (`JobQueue.recover`);
- cancelled batches: lines still pending end as `cancelled`, then the files and `cancelled`;
- batches past their completion window: pending lines end as `expired`, output kept, then `expired`;
- batches whose lines are all written but that did not end (their last worker died), or whose
  finalization was cut short: ended now;
- batches with pending lines but no job waiting or running for them for `batch_stalled_after_s` (a job
  that failed for good, or one lost between processes): their pending lines queued again (a line is
  written once whoever runs it, so a job queued once too often costs only a skip);
- batches left in `validating` by a process that died while queueing them: queued again;
- ended batches whose webhook is not delivered: delivered;
- files past their retention: deleted with everything derived from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.batches.queue import JobQueue
from gateway.batches.runner import BatchRunner, chunks
from gateway.batches.store import BatchRow, BatchStore

logger = logging.getLogger(__name__)

TICK_S = 1.0
STUCK_S = 30.0
"""A batch this long in `validating` or `finalizing` was left there by a process that died."""
RETENTION_EVERY_S = 60.0
Notify = Callable[[BatchRow], Coroutine[Any, Any, None]]


class Maintenance:
    def __init__(
        self,
        store: BatchStore,
        runner: BatchRunner,
        queue: JobQueue,
        chunk_lines: int,
        notify: Notify | None,
        jobless_after_s: float,
    ) -> None:
        self.store = store
        self.runner = runner
        self.queue = queue
        self.chunk_lines = chunk_lines
        self.notify = notify
        self._task: asyncio.Task[None] | None = None
        self._notifying: dict[str, asyncio.Task[None]] = {}
        self._retention_at = 0.0
        self.jobless_after = timedelta(seconds=jobless_after_s)
        self._jobless_since: dict[str, datetime] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._notifying.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a database gone for a moment: the next tick tries again
                logger.warning("batch maintenance: %s", type(exc).__name__, exc_info=exc)
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        await self.queue.recover()
        now = datetime.now(UTC)
        stuck = now - timedelta(seconds=STUCK_S)
        batches = await asyncio.to_thread(
            self.store.in_status, ("validating", "in_progress", "finalizing", "cancelling")
        )
        for batch in batches:
            await self._step(batch, now, stuck)
        await self._queue_orphaned_lines({b.id for b in batches if b.status == "in_progress"}, now)
        if self.notify is not None:
            for batch in await asyncio.to_thread(self.store.ended_unsent):
                if batch.id not in self._notifying:
                    task = asyncio.create_task(self.notify(batch))
                    self._notifying[batch.id] = task
                    task.add_done_callback(lambda _, key=batch.id: self._notifying.pop(key, None))
        loop_time = asyncio.get_running_loop().time()
        if loop_time >= self._retention_at:
            self._retention_at = loop_time + RETENTION_EVERY_S
            await self.retention(now)

    async def _step(self, batch: BatchRow, now: datetime, stuck: datetime) -> None:
        times = batch.times
        if batch.status == "cancelling":
            await self.runner.stop_pending(batch, "cancelled", "batch_cancelled", "the batch was cancelled")
            await self.runner.finalize(batch.id)
        elif batch.status == "in_progress" and batch.expires_at <= now:
            await self.runner.stop_pending(
                batch, "expired", "batch_expired", "the batch's completion window ended before this line ran"
            )
            if await asyncio.to_thread(self.store.move, batch.id, "finalizing", ("in_progress",)):
                await self.runner.finalize(batch.id)
        elif batch.status == "in_progress":
            await self.runner.finish_if_done(batch.id)
        elif batch.status == "finalizing" and (times["finalizing_at"] or now) <= stuck:
            await self.runner.finalize(batch.id)
        elif batch.status == "validating" and (times["created_at"] or now) <= stuck:
            pending = await asyncio.to_thread(self.store.pending_lines, batch.id)
            await self.queue.enqueue(chunks(batch.id, pending, self.chunk_lines))
            await asyncio.to_thread(self.store.move, batch.id, "in_progress", ("validating",))

    async def _queue_orphaned_lines(self, in_progress: set[str], now: datetime) -> None:
        """One query per tick for all batches in progress: which have no job waiting or running."""
        jobless = in_progress - await self.queue.with_jobs(in_progress)
        self._jobless_since = {b: self._jobless_since.get(b, now) for b in jobless}
        for batch_id, since in self._jobless_since.items():
            if now - since < self.jobless_after:
                continue
            pending = await asyncio.to_thread(self.store.pending_lines, batch_id)
            if pending:
                await self.queue.enqueue(chunks(batch_id, pending, self.chunk_lines))
                logger.warning("batch %s: %d pending lines had no job; queued again", batch_id, len(pending))
            self._jobless_since[batch_id] = now  # and again only after another quiet spell

    async def retention(self, now: datetime) -> None:
        for tenant, file_id in await asyncio.to_thread(self.store.expired_files, now):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.delete_file, tenant, file_id)
                logger.info("file %s deleted at the end of its retention", file_id)
