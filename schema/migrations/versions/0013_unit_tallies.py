"""the open units of each job per task, queue and state, kept by triggers on units: what
"is the job done", a tenant's queued documents and tokens and the units queued per queue
read instead of the backlog

Revision ID: 0013_unit_tallies
Revises: 0012_scale_indexes
Create Date: 2026-12-07 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_unit_tallies"
down_revision: str | None = "0012_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "state IN ('waiting', 'queued', 'running')"
KEY = "job_id, task, queue, state"
# One unit's contribution: 1 unit, its documents, its estimated tokens.
MEASURES = "1 AS units, seq_hi - seq_lo + 1 AS documents, coalesce(est_tokens, 0) AS est_tokens"
NEGATIVE = (
    "-1 AS units, -(seq_hi - seq_lo + 1) AS documents, -coalesce(est_tokens, 0) AS est_tokens"
)
UPSERT = (
    f"INSERT INTO unit_tallies AS t ({KEY}, units, documents, est_tokens) "
    f"SELECT {KEY}, sum(units), sum(documents), sum(est_tokens) FROM ({{rows}}) AS d "
    f"GROUP BY {KEY} HAVING sum(units) <> 0 OR sum(documents) <> 0 OR sum(est_tokens) <> 0 "
    f"ORDER BY {KEY} "  # rows locked in one order by every statement
    f"ON CONFLICT ({KEY}) DO UPDATE SET units = t.units + excluded.units, "
    "documents = t.documents + excluded.documents, est_tokens = t.est_tokens + excluded.est_tokens"
)
NEW_ROWS = f"SELECT {KEY}, {MEASURES} FROM new_units WHERE {OPEN}"
OLD_ROWS = f"SELECT {KEY}, {NEGATIVE} FROM old_units WHERE {OPEN}"

# Statement-level, on the statement's transition tables: one upsert per statement however
# many units it moves (a job's insert, a cancel sweep), nothing written for a statement
# that moves no unit between states (heartbeats, dispatch). A delete only subtracts from
# rows that exist: the job (and its tallies) may be going in the same statement.
FUNCTION = f"""
CREATE FUNCTION unit_tallies_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {UPSERT.format(rows=NEW_ROWS)};
  ELSIF TG_OP = 'UPDATE' THEN
    {UPSERT.format(rows=NEW_ROWS + " UNION ALL " + OLD_ROWS)};
  ELSE
    UPDATE unit_tallies AS t SET units = t.units + d.units, documents = t.documents + d.documents,
      est_tokens = t.est_tokens + d.est_tokens
    FROM (SELECT {KEY}, sum(units) AS units, sum(documents) AS documents,
          sum(est_tokens) AS est_tokens FROM ({OLD_ROWS}) AS o GROUP BY {KEY}) AS d
    WHERE (t.job_id, t.task, t.queue, t.state) = (d.job_id, d.task, d.queue, d.state);
  END IF;
  RETURN NULL;
END $$
"""
TRIGGERS = {
    "unit_tallies_insert": "AFTER INSERT ON units REFERENCING NEW TABLE AS new_units",
    "unit_tallies_update": (
        "AFTER UPDATE ON units REFERENCING OLD TABLE AS old_units NEW TABLE AS new_units"
    ),
    "unit_tallies_delete": "AFTER DELETE ON units REFERENCING OLD TABLE AS old_units",
}


def upgrade() -> None:
    op.create_table(
        "unit_tallies",
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("task", sa.String(24), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("documents", sa.BigInteger(), nullable=False),
        sa.Column("est_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "task", "queue", "state"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: no triggers; its reads count the units (docbatch.domain.tallies)
    op.execute(FUNCTION)
    for name, when in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION unit_tallies_apply()"
        )
    op.execute(
        f"INSERT INTO unit_tallies ({KEY}, units, documents, est_tokens) "
        f"SELECT {KEY}, count(*), sum(seq_hi - seq_lo + 1), sum(est_tokens) FROM units "
        f"WHERE {OPEN} GROUP BY {KEY}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON units")
        op.execute("DROP FUNCTION unit_tallies_apply()")
    op.drop_table("unit_tallies")
