"""jobs.delete_reason: why a job is being deleted (request, retention), for its job.deleted
webhook

Revision ID: 0009_delete_reason
Revises: 0008_schedule_options
Create Date: 2026-12-06 20:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_delete_reason"
down_revision: str | None = "0008_schedule_options"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("delete_reason", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "delete_reason")
