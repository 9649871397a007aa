"""schedule options: webhook_url, priority, timezone, only_changed; the files a schedule
has seen (schedule_files)

Revision ID: 0008_schedule_options
Revises: 0007_data_lifecycle
Create Date: 2026-12-06 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_schedule_options"
down_revision: str | None = "0007_data_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )
        batch.add_column(
            sa.Column("only_changed", sa.Boolean(), nullable=False, server_default="0")
        )
    op.create_table(
        "schedule_files",
        sa.Column(
            "schedule_id",
            sa.String(length=40),
            sa.ForeignKey("schedules.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_files")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("only_changed")
        batch.drop_column("timezone")
        batch.drop_column("priority")
        batch.drop_column("webhook_url")
