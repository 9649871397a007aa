"""data lifecycle: job deletion and retention, per-tenant defaults, originals stored once
per tenant by content, OpenAI file expiry, webhooks of deleted jobs

Revision ID: 0007_data_lifecycle
Revises: 0006_admin_audit
Create Date: 2026-12-06 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_data_lifecycle"
down_revision: str | None = "0006_admin_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deleting_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("delete_left", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("keep_originals", sa.Boolean(), nullable=True))
    op.create_index("ix_jobs_deleting", "jobs", ["deleting_at"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.add_column("tenants", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.add_column("tenants", sa.Column("keep_originals", sa.Boolean(), nullable=True))
    op.add_column("files", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_files_expires", "files", ["expires_at"])
    op.add_column("batches", sa.Column("output_expires_after", sa.Integer(), nullable=True))
    # A job.deleted delivery outlives its job: no job row to point at, its body kept here.
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
    op.create_table(
        "originals",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_oid", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("refs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "sha256", name="uq_originals_tenant_sha256"),
    )
    op.create_index("ix_originals_blob", "originals", ["blob_oid"])


def downgrade() -> None:
    op.drop_index("ix_originals_blob", table_name="originals")
    op.drop_table("originals")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("payload")
        batch.drop_column("tenant")
    op.drop_column("batches", "output_expires_after")
    op.drop_index("ix_files_expires", table_name="files")
    op.drop_column("files", "expires_at")
    op.drop_column("tenants", "keep_originals")
    op.drop_column("tenants", "retention_days")
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_index("ix_jobs_deleting", table_name="jobs")
    for column in ("keep_originals", "retention_days", "delete_left", "deleting_at"):
        op.drop_column("jobs", column)
