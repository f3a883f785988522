"""Files, batches and their lines in the gateway's database (SQLAlchemy Core, SQLite or PostgreSQL).

Every content column is sealed (`crypto.Sealer`) before it reaches here or is opened by the caller. A line
moves out of `pending` once, by a conditional update (`finish_line`): whichever worker writes a line
first wins and every later write of the same line changes nothing, so a line re-run after a worker died
is never written twice. Blocking calls; `asyncio.to_thread` them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from gateway.database import Database
from gateway.database.tables import batch_files, batch_lines, batches

PENDING = "pending"
OK = "ok"
FAILED = "failed"
LINE_ENDS = ("ok", "failed", "cancelled", "expired")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives times back without their zone; every time stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FileRow:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    expires_at: datetime
    batch_id: str | None


@dataclass(frozen=True)
class BatchRow:
    id: str
    tenant: str
    principal: dict[str, Any]
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    total: int
    times: dict[str, datetime | None]
    output_file_id: str | None
    error_file_id: str | None
    meta: dict[str, str] | None
    webhook_url: bytes | None
    webhook_sent_at: datetime | None

    @property
    def expires_at(self) -> datetime:
        expires = self.times["expires_at"]
        assert expires is not None
        return expires


TIMES = (
    "created_at",
    "expires_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
FILE_COLUMNS = [c for c in batch_files.c if c.name != "content"]


def _file(row: Any) -> FileRow:
    values = dict(row._mapping)
    values["created_at"] = aware(values["created_at"])
    values["expires_at"] = aware(values["expires_at"])
    return FileRow(**values)


def _batch(row: Any) -> BatchRow:
    values = dict(row._mapping)
    return BatchRow(
        id=values["id"],
        tenant=values["tenant"],
        principal=json.loads(values["principal"]),
        endpoint=values["endpoint"],
        input_file_id=values["input_file_id"],
        completion_window=values["completion_window"],
        status=values["status"],
        total=values["total"],
        times={name: aware(values[name]) for name in TIMES},
        output_file_id=values["output_file_id"],
        error_file_id=values["error_file_id"],
        meta=json.loads(values["meta"]) if values["meta"] else None,
        webhook_url=values["webhook_url"],
        webhook_sent_at=aware(values["webhook_sent_at"]),
    )


class BatchStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- files --

    def add_file(self, row: FileRow, content: bytes) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(insert(batch_files).values(**row.__dict__, content=content))

    def file(self, tenant: str, file_id: str) -> FileRow | None:
        query = select(*FILE_COLUMNS).where(batch_files.c.id == file_id, batch_files.c.tenant == tenant)
        with self.database.engine.connect() as connection:
            row = connection.execute(query).first()
        return _file(row) if row is not None else None

    def content(self, tenant: str, file_id: str) -> bytes | None:
        query = select(batch_files.c.content).where(
            batch_files.c.id == file_id, batch_files.c.tenant == tenant
        )
        with self.database.engine.connect() as connection:
            return connection.execute(query).scalar()

    def files(self, tenant: str, purpose: str | None, after: str | None, limit: int) -> list[FileRow]:
        query = select(*FILE_COLUMNS).where(batch_files.c.tenant == tenant)
        if purpose is not None:
            query = query.where(batch_files.c.purpose == purpose)
        with self.database.engine.connect() as connection:
            if after is not None:
                query = query.where(_before(connection, batch_files, tenant, after))
            order = (batch_files.c.created_at.desc(), batch_files.c.id.desc())
            rows = connection.execute(query.order_by(*order).limit(limit)).all()
        return [_file(row) for row in rows]

    def delete_file(self, tenant: str, file_id: str) -> bool:
        """The file and what was derived from it: the batches made from an input file, their lines and
        their output and error files."""
        with self.database.engine.begin() as connection:
            found = connection.execute(
                delete(batch_files).where(batch_files.c.id == file_id, batch_files.c.tenant == tenant)
            ).rowcount
            if not found:
                return False
            derived = connection.execute(
                select(batches.c.id).where(batches.c.input_file_id == file_id, batches.c.tenant == tenant)
            ).scalars()
            _delete_batches(connection, list(derived))
            return True

    # -- batches --

    def add_batch(self, row: BatchRow, lines: Sequence[dict[str, Any]]) -> None:
        values = {
            "id": row.id,
            "tenant": row.tenant,
            "principal": json.dumps(row.principal),
            "endpoint": row.endpoint,
            "input_file_id": row.input_file_id,
            "completion_window": row.completion_window,
            "status": row.status,
            "total": row.total,
            **row.times,
            "output_file_id": None,
            "error_file_id": None,
            "meta": json.dumps(row.meta) if row.meta is not None else None,
            "webhook_url": row.webhook_url,
            "webhook_sent_at": None,
        }
        with self.database.engine.begin() as connection:
            connection.execute(insert(batches).values(**values))
            for start in range(0, len(lines), 1000):
                connection.execute(insert(batch_lines), list(lines[start : start + 1000]))

    def batch(self, batch_id: str, tenant: str | None = None) -> BatchRow | None:
        query = select(batches).where(batches.c.id == batch_id)
        if tenant is not None:
            query = query.where(batches.c.tenant == tenant)
        with self.database.engine.connect() as connection:
            row = connection.execute(query).first()
        return _batch(row) if row is not None else None

    def batches(self, tenant: str, after: str | None, limit: int) -> list[BatchRow]:
        query = select(batches).where(batches.c.tenant == tenant)
        with self.database.engine.connect() as connection:
            if after is not None:
                query = query.where(_before(connection, batches, tenant, after))
            order = (batches.c.created_at.desc(), batches.c.id.desc())
            return [_batch(row) for row in connection.execute(query.order_by(*order).limit(limit))]

    def active(self, tenant: str) -> int:
        query = select(func.count()).where(
            batches.c.tenant == tenant,
            batches.c.status.in_(("validating", "in_progress", "finalizing", "cancelling")),
        )
        with self.database.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def in_status(self, statuses: Iterable[str]) -> list[BatchRow]:
        query = select(batches).where(batches.c.status.in_(tuple(statuses))).order_by(batches.c.created_at)
        with self.database.engine.connect() as connection:
            return [_batch(row) for row in connection.execute(query)]

    def ended_unsent(self) -> list[BatchRow]:
        """Ended batches with a webhook not yet delivered."""
        query = select(batches).where(
            batches.c.status.in_(("completed", "failed", "expired", "cancelled")),
            batches.c.webhook_url.is_not(None),
            batches.c.webhook_sent_at.is_(None),
        )
        with self.database.engine.connect() as connection:
            return [_batch(row) for row in connection.execute(query)]

    def move(self, batch_id: str, to: str, came_from: Iterable[str], **values: Any) -> bool:
        """`to` (with `<to>_at` now) if the batch is in one of `came_from`: whether it moved."""
        stamp = {f"{to}_at": datetime.now(UTC)} if f"{to}_at" in TIMES else {}
        statement = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.status.in_(tuple(came_from)))
            .values(status=to, **stamp, **values)
        )
        with self.database.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def webhook_sent(self, batch_id: str) -> None:
        statement = update(batches).where(batches.c.id == batch_id).values(webhook_sent_at=datetime.now(UTC))
        with self.database.engine.begin() as connection:
            connection.execute(statement)

    def counts(self, batch_id: str) -> dict[str, int]:
        query = (
            select(batch_lines.c.status, func.count())
            .where(batch_lines.c.batch_id == batch_id)
            .group_by(batch_lines.c.status)
        )
        with self.database.engine.connect() as connection:
            return {status: int(count) for status, count in connection.execute(query)}

    def delete_batch(self, batch_id: str) -> None:
        with self.database.engine.begin() as connection:
            _delete_batches(connection, [batch_id])

    # -- lines --

    def pending(self, batch_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """Pending lines numbered `first` to `last` (included), in order, with their sealed requests."""
        query = (
            select(batch_lines.c.line, batch_lines.c.request)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.status == PENDING,
                batch_lines.c.line.between(first, last),
            )
            .order_by(batch_lines.c.line)
        )
        with self.database.engine.connect() as connection:
            return [(int(line), request) for line, request in connection.execute(query)]

    def pending_lines(self, batch_id: str) -> list[int]:
        query = select(batch_lines.c.line).where(
            batch_lines.c.batch_id == batch_id, batch_lines.c.status == PENDING
        )
        with self.database.engine.connect() as connection:
            return sorted(int(line) for line in connection.execute(query).scalars())

    def finish_line(self, batch_id: str, line: int, status: str, result: bytes) -> bool:
        """The line's outcome, if it is still pending: whether this call wrote it."""
        statement = (
            update(batch_lines)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.line == line,
                batch_lines.c.status == PENDING,
            )
            .values(status=status, result=result)
        )
        with self.database.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def failed_requests(self, batch_id: str) -> list[tuple[int, bytes]]:
        """The sealed requests of the lines that did not answer (malformed lines have none), in order."""
        query = (
            select(batch_lines.c.line, batch_lines.c.request)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.status != OK,
                batch_lines.c.status != PENDING,
                batch_lines.c.request.is_not(None),
            )
            .order_by(batch_lines.c.line)
        )
        with self.database.engine.connect() as connection:
            return [(int(line), request) for line, request in connection.execute(query)]

    def results(self, batch_id: str) -> list[tuple[int, str, bytes | None]]:
        query = (
            select(batch_lines.c.line, batch_lines.c.status, batch_lines.c.result)
            .where(batch_lines.c.batch_id == batch_id)
            .order_by(batch_lines.c.line)
        )
        with self.database.engine.connect() as connection:
            return [(int(line), status, result) for line, status, result in connection.execute(query)]

    def put_output(self, row: FileRow, content: bytes) -> None:
        """An output or error file; written again (same ID) when a finalization is repeated."""
        with self.database.engine.begin() as connection:
            connection.execute(delete(batch_files).where(batch_files.c.id == row.id))
            connection.execute(insert(batch_files).values(**row.__dict__, content=content))

    # -- retention --

    def expired_files(self, now: datetime) -> list[tuple[str, str]]:
        query = select(batch_files.c.tenant, batch_files.c.id).where(batch_files.c.expires_at < now)
        with self.database.engine.connect() as connection:
            return [(tenant, file_id) for tenant, file_id in connection.execute(query)]


def _before(connection: Any, table: Any, tenant: str, after: str) -> Any:
    """Rows listed after `after` (newest first: created earlier, or at the same time with a smaller ID)."""
    anchor = connection.execute(
        select(table.c.created_at).where(table.c.id == after, table.c.tenant == tenant)
    ).scalar()
    if anchor is None:
        return table.c.id != table.c.id  # an unknown cursor lists nothing
    return or_(table.c.created_at < anchor, and_(table.c.created_at == anchor, table.c.id < after))


def _delete_batches(connection: Any, batch_ids: list[str]) -> None:
    if not batch_ids:
        return
    connection.execute(delete(batch_lines).where(batch_lines.c.batch_id.in_(batch_ids)))
    connection.execute(delete(batch_files).where(batch_files.c.batch_id.in_(batch_ids)))
    connection.execute(delete(batches).where(batches.c.id.in_(batch_ids)))
