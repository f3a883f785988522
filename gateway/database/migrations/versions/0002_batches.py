"""Batch jobs: files, batches and their lines (gateway/batches).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_index("batch_files_tenant_created", "batch_files", ["tenant", "created_at"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalizing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelling_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
        sa.Column("meta", sa.Text, nullable=True),
        sa.Column("webhook_url", sa.LargeBinary, nullable=True),
        sa.Column("webhook_sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("batches_tenant_created", "batches", ["tenant", "created_at"])
    op.create_index("batches_status", "batches", ["status"])
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.String(40), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
    )
    op.create_index("batch_lines_status", "batch_lines", ["batch_id", "status"])


def downgrade() -> None:
    op.drop_index("batch_lines_status", "batch_lines")
    op.drop_table("batch_lines")
    op.drop_index("batches_status", "batches")
    op.drop_index("batches_tenant_created", "batches")
    op.drop_table("batches")
    op.drop_index("batch_files_tenant_created", "batch_files")
    op.drop_table("batch_files")
