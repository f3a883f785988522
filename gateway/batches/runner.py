"""Runs a batch's lines and ends the batch: the work a queued job does, whichever queue delivered it.

A job names a span of lines (`Chunk`); running it runs the span's lines that are still pending, one
after another, and writes each outcome once (`BatchStore.finish_line`). A job run again after its worker
died skips the lines already written and runs the one that was in flight again: no line lost, none
written twice. Before each line the batch's status is read again, so a cancelled or expired batch starts
no new line.

Ending a batch (`finalize`) writes its output and error files from the lines, in input order, and moves
it to its last status: `completed` when some line answered, `failed` when none did, `expired` when the
completion window closed first, `cancelled` after a cancel. It is idempotent (the files have IDs derived
from the batch), so a finalization cut short is simply done again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.batches.crypto import Sealer
from gateway.batches.lines import LineRunner, error_record
from gateway.batches.store import FAILED, OK, BatchRow, BatchStore, FileRow
from gateway.security.principal import Credential, Principal
from gateway.security.scopes import Scope

logger = logging.getLogger(__name__)

RUNNING = ("in_progress",)


@dataclass(frozen=True)
class Chunk:
    batch_id: str
    first: int
    last: int


def chunks(batch_id: str, lines: list[int], size: int) -> list[Chunk]:
    """`lines` (sorted line numbers) in spans of at most `size` lines."""
    return [
        Chunk(batch_id, lines[start], lines[min(start + size, len(lines)) - 1])
        for start in range(0, len(lines), size)
    ]


def principal_record(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {"name": "", "authenticated": False}
    return {
        "name": principal.name,
        "authenticated": principal.authenticated,
        "tenant": principal.tenant,
        "scopes": sorted(principal.scopes),
        "credential": principal.credential.value,
        "label_name": principal.label_name,
    }


def principal_of(record: dict[str, Any]) -> Principal:
    """The batch's creator, as its lines run: with the scopes it had when it created the batch."""
    fields: dict[str, Any] = {"name": record["name"], "authenticated": record["authenticated"]}
    if "scopes" in record:
        fields |= {
            "tenant": record["tenant"],
            "scopes": frozenset(Scope(s) for s in record["scopes"]),
            "credential": Credential(record["credential"]),
            "label_name": record["label_name"],
        }
    return Principal(**fields)


def output_file_ids(batch_id: str) -> tuple[str, str]:
    suffix = batch_id.removeprefix("batch_")
    return f"file-out{suffix}", f"file-err{suffix}"


class BatchRunner:
    def __init__(self, store: BatchStore, sealer: Sealer, lines: LineRunner, retention_s: float) -> None:
        self.store = store
        self.sealer = sealer
        self.lines = lines
        self.retention_s = retention_s

    async def run_chunk(self, chunk: Chunk) -> None:
        batch = await asyncio.to_thread(self.store.batch, chunk.batch_id)
        if batch is None or batch.status not in RUNNING:
            return
        principal = principal_of(batch.principal)
        pending = await asyncio.to_thread(self.store.pending, chunk.batch_id, chunk.first, chunk.last)
        for number, sealed in pending:
            current = await asyncio.to_thread(self.store.batch, chunk.batch_id)
            if current is None or current.status not in RUNNING:
                return
            if current.expires_at <= datetime.now(UTC):
                return  # the maintenance loop expires it
            request = json.loads(self.sealer.open(sealed, request_label(chunk.batch_id, number)))
            outcome = await self.lines.run(chunk.batch_id, number, principal, request)
            result = self.sealer.seal(
                json.dumps(outcome.record).encode(), result_label(chunk.batch_id, number)
            )
            # The line's usage row is written before the line: a worker killed between the two runs the
            # line again, and the ledger keeps one row per request ID, so each line is one row.
            ledger = self.lines.operations.meter.ledger
            if ledger is not None:
                await ledger.flush()
            await asyncio.to_thread(
                self.store.finish_line, chunk.batch_id, number, OK if outcome.ok else FAILED, result
            )
        await self.finish_if_done(chunk.batch_id)

    async def finish_if_done(self, batch_id: str) -> None:
        if await asyncio.to_thread(self.store.pending_lines, batch_id):
            return
        if await asyncio.to_thread(self.store.move, batch_id, "finalizing", RUNNING):
            await self.finalize(batch_id)

    async def stop_pending(self, batch: BatchRow, status: str, code: str, message: str) -> None:
        """Every line still pending ends as `status` (cancelled, expired) with an error line; a line in
        flight somewhere then finds itself no longer pending and its result is dropped."""
        for number in await asyncio.to_thread(self.store.pending_lines, batch.id):
            custom_id = None
            rows = await asyncio.to_thread(self.store.pending, batch.id, number, number)
            if rows:
                request = json.loads(self.sealer.open(rows[0][1], request_label(batch.id, number)))
                custom_id = request["custom_id"]
            record = error_record(batch.id, number, custom_id, code, message)
            sealed = self.sealer.seal(json.dumps(record).encode(), result_label(batch.id, number))
            await asyncio.to_thread(self.store.finish_line, batch.id, number, status, sealed)

    async def finalize(self, batch_id: str) -> None:
        """Output and error files from the lines, then the batch's last status (see the module doc)."""
        batch = await asyncio.to_thread(self.store.batch, batch_id)
        if batch is None or batch.status not in ("finalizing", "cancelling"):
            return
        output: list[bytes] = []
        errors: list[bytes] = []
        statuses: set[str] = set()
        for number, status, sealed in await asyncio.to_thread(self.store.results, batch_id):
            statuses.add(status)
            if sealed is None:
                continue
            record = self.sealer.open(sealed, result_label(batch_id, number))
            (output if status == OK else errors).append(record + b"\n")
        output_id, error_id = output_file_ids(batch_id)
        created = datetime.now(UTC)
        expires = created + timedelta(seconds=self.retention_s)
        ids: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
        for file_id, name, lines, key in (
            (output_id, f"{batch_id}_output.jsonl", output, "output_file_id"),
            (error_id, f"{batch_id}_error.jsonl", errors, "error_file_id"),
        ):
            if not lines:
                continue
            data = b"".join(lines)
            row = FileRow(file_id, batch.tenant, "batch_output", name, len(data), created, expires, batch_id)
            await asyncio.to_thread(self.store.put_output, row, self.sealer.seal(data, file_label(file_id)))
            ids[key] = file_id
        if batch.status == "cancelling":
            end = "cancelled"
        elif "expired" in statuses:
            end = "expired"
        elif OK in statuses:
            end = "completed"
        else:
            end = "failed"
        if await asyncio.to_thread(self.store.move, batch_id, end, (batch.status,), **ids):
            logger.info("batch %s %s", batch_id, end)


def request_label(batch_id: str, line: int) -> str:
    return f"{batch_id}:{line}:request"


def result_label(batch_id: str, line: int) -> str:
    return f"{batch_id}:{line}:result"


def file_label(file_id: str) -> str:
    return f"file:{file_id}"
