"""the oldest queued unit of each deployment read from an index (the api's
docbatch_oldest_queued_unit_age_seconds), not by reading every queued unit

Revision ID: 0014_queued_age_index
Revises: 0013_unit_tallies
Create Date: 2026-12-07 02:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_queued_age_index"
down_revision: str | None = "0013_unit_tallies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = "state = 'queued'"


def upgrade() -> None:
    op.create_index(
        "ix_units_queued_age",
        "units",
        ["task", "published_at"],
        postgresql_where=sa.text(QUEUED),
        sqlite_where=sa.text(QUEUED),
    )


def downgrade() -> None:
    op.drop_index("ix_units_queued_age", table_name="units")
