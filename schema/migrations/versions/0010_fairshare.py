"""fair share, quotas and usage: units.dispatched_at and the backlog index, tenant weight
and limits, fair_shares (the dispatcher's virtual clocks), usage (one row per finished unit)

Revision ID: 0010_fairshare
Revises: 0009_delete_reason
Create Date: 2026-12-06 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_fairshare"
down_revision: str | None = "0009_delete_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKLOG = "state = 'queued' AND dispatched_at IS NULL"


def upgrade() -> None:
    op.add_column("units", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    # Units queued before this revision were all sent at creation: not backlog.
    op.execute("UPDATE units SET dispatched_at = published_at WHERE state = 'queued'")
    op.create_index(
        "ix_units_backlog",
        "units",
        ["queue", "job_id"],
        postgresql_where=sa.text(BACKLOG),
        sqlite_where=sa.text(BACKLOG),
    )
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
        for name in (
            "max_queued_documents",
            "max_queued_tokens",
            "max_documents_per_day",
            "max_concurrent_units",
        ):
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    op.create_table(
        "fair_shares",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("vtime", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("queue", "tenant"),
    )
    op.create_table(
        "usage",
        sa.Column("unit_id", sa.BigInteger(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=24), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("reused_documents", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("generated_tokens", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("model_seconds", sa.Float(), nullable=False),
        sa.Column("extract_files", sa.Integer(), nullable=False),
        sa.Column("extract_pages", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("unit_id"),
    )
    op.create_index("ix_usage_tenant_finished", "usage", ["tenant", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_tenant_finished", table_name="usage")
    op.drop_table("usage")
    op.drop_table("fair_shares")
    with op.batch_alter_table("tenants") as batch:
        for name in (
            "max_concurrent_units",
            "max_documents_per_day",
            "max_queued_tokens",
            "max_queued_documents",
            "weight",
        ):
            batch.drop_column(name)
    op.drop_index("ix_units_backlog", table_name="units")
    op.drop_column("units", "dispatched_at")
