"""a batch's token usage (OpenAI's ``batch.usage``), written when it is finalized

Revision ID: 0011_batch_usage
Revises: 0010_fairshare
Create Date: 2026-12-06 20:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_batch_usage"
down_revision: str | None = "0010_fairshare"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("usage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("usage")
