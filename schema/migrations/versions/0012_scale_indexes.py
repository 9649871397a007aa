"""what stays flat as a job grows: the usage rows of a job (the dashboard's throughput
chart), the units sent and not yet claimed (the dispatcher's and the reconciler's reads),
a job's backlog in id order, and each job task's reused count kept with its counters

Revision ID: 0012_scale_indexes
Revises: 0011_batch_usage
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_scale_indexes"
down_revision: str | None = "0011_batch_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SENT = "state = 'queued' AND dispatched_at IS NOT NULL"
BACKLOG = "state = 'queued' AND dispatched_at IS NULL"


def _backlog_index(columns: list[str]) -> None:
    op.drop_index("ix_units_backlog", table_name="units")
    op.create_index(
        "ix_units_backlog",
        "units",
        columns,
        postgresql_where=sa.text(BACKLOG),
        sqlite_where=sa.text(BACKLOG),
    )


def upgrade() -> None:
    # A job's next backlog units in id order, read from the index (the dispatcher's pick).
    _backlog_index(["queue", "job_id", "id"])
    op.create_index("ix_usage_job", "usage", ["job_id"])
    op.create_index(
        "ix_units_sent",
        "units",
        ["queue", "dispatched_at"],
        postgresql_where=sa.text(SENT),
        sqlite_where=sa.text(SENT),
    )
    with op.batch_alter_table("job_tasks") as batch:
        batch.add_column(sa.Column("reused", sa.BigInteger(), nullable=False, server_default="0"))
    # Counted as the units closed; a unit still open adds its own when it closes.
    op.execute(
        "UPDATE job_tasks SET reused = (SELECT count(*) FROM results r "
        "JOIN units u ON u.id = r.unit_id "
        "WHERE r.job_id = job_tasks.job_id AND r.task = job_tasks.task AND r.reused "
        "AND u.state IN ('done', 'failed', 'cancelled'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("job_tasks") as batch:
        batch.drop_column("reused")
    op.drop_index("ix_units_sent", table_name="units")
    op.drop_index("ix_usage_job", table_name="usage")
    _backlog_index(["queue", "job_id"])
