"""The tables, as SQLAlchemy Core objects; migrations/versions/ creates them (a test compares the two)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
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
