"""Batch jobs: OpenAI-compatible files and batches, run line by line through the operation layer by a
job queue (procrastinate on PostgreSQL, the database itself on SQLite). See docs/api/batches.md."""

from gateway.batches.service import BatchService

__all__ = ["BatchService"]
