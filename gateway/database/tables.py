"""The tables, as SQLAlchemy Core objects; migrations/versions/ creates them (a test compares the two)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("scopes", String(256), nullable=False),  # space-separated scope names
    # The key's public part (`samo_<prefix>_...`): how a key is found, and recognised when leaked.
    Column("prefix", String(32), nullable=False, unique=True),
    Column("digest", String(64), nullable=False),  # SHA-256 of the whole key, hex; never the key
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("principal", String(256), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("texts", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("audio_seconds", Float, nullable=False),
    Column("status", String(32), nullable=False),  # `ok`, or the error type answered
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "request_id", name="usage_tenant_request_id"),
    Index("usage_tenant_at", "tenant", "at"),
)

# Batch jobs (gateway/batches). Contents (files, lines, results) are sealed: AES-256-GCM, never plaintext.
batch_files = Table(
    "batch_files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("purpose", String(32), nullable=False),  # batch, audio, batch_output
    Column("filename", String(256), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("batch_id", String(40), nullable=True),  # the batch whose output or error file it is
    Column("content", LargeBinary, nullable=False),
    Index("batch_files_tenant_created", "tenant", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("principal", Text, nullable=False),  # JSON: who created it, what it may call
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("in_progress_at", DateTime(timezone=True), nullable=True),
    Column("finalizing_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("failed_at", DateTime(timezone=True), nullable=True),
    Column("expired_at", DateTime(timezone=True), nullable=True),
    Column("cancelling_at", DateTime(timezone=True), nullable=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("meta", Text, nullable=True),  # JSON: the batch's `metadata`
    Column("webhook_url", LargeBinary, nullable=True),  # sealed
    Column("webhook_sent_at", DateTime(timezone=True), nullable=True),
    Index("batches_tenant_created", "tenant", "created_at"),
    Index("batches_status", "status"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("line", Integer, primary_key=True),  # 1-based line number in the input file
    Column("status", String(16), nullable=False),  # pending, ok, failed, cancelled, expired
    Column("request", LargeBinary, nullable=True),  # sealed JSON line; None for a malformed line
    Column("result", LargeBinary, nullable=True),  # sealed output or error line
    Index("batch_lines_status", "batch_id", "status"),
)
