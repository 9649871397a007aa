"""schedules, schedule runs and result reuse

Revision ID: 0003_schedules
Revises: 0001
Create Date: 2026-11-23 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_schedules"
down_revision: str | None = "0002_tenants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("reuse_results", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name", name="uq_schedules_tenant_name"),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("schedule_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("schedule_id", "period_start"),
    )
    op.add_column(
        "jobs", sa.Column("reuse_results", sa.Boolean(), server_default="0", nullable=False)
    )
    op.add_column("results", sa.Column("reused", sa.Boolean(), server_default="0", nullable=False))
    op.create_index("ix_documents_content_hash", "documents", ["content_hash"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_documents_content_hash", table_name="documents")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("reused")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reuse_results")
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
