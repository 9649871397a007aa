"""document_files (the original files of documents submitted as files) and blobs (their
bytes on SQLite, which has no large objects)

Revision ID: 0005_document_files
Revises: 0004_openai
Create Date: 2026-12-02 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_document_files"
down_revision: str | None = "0004_openai"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "document_files",
        sa.Column(
            "document_id",
            sa.BigInteger(),
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "job_id",
            sa.String(length=40),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("blob_oid", sa.BigInteger(), nullable=True),
        sa.Column("parent_document_id", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_document_files_job", "document_files", ["job_id"])
    op.create_index("ix_document_files_sha256", "document_files", ["sha256"])
    op.create_table(
        "blobs",
        sa.Column("oid", BigId, primary_key=True, autoincrement=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blobs")
    op.drop_index("ix_document_files_sha256", table_name="document_files")
    op.drop_index("ix_document_files_job", table_name="document_files")
    op.drop_table("document_files")
