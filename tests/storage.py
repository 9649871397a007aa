"""What a lifecycle test asserts after it ran: every stored blob is owned by a row.

``assert_blobs_owned()`` compares the database's large objects with the blob oids its
rows hold (original files, shared originals, OpenAI files): equal means nothing was
orphaned and nothing a row names is missing. The ``blobs_owned`` fixture runs it after
each test of a module that uses it (``pytestmark = pytest.mark.usefixtures(...)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings

REFERENCED = """
SELECT count(*) FROM (
    SELECT blob_oid FROM document_files WHERE blob_oid IS NOT NULL
    UNION SELECT blob_oid FROM originals
    UNION SELECT blob_oid FROM files WHERE blob_oid IS NOT NULL
) AS referenced
"""


def large_objects() -> int:
    with new_session(get_settings()) as s:
        return int(s.scalar(text("SELECT count(*) FROM pg_largeobject_metadata")) or 0)


def referenced_blobs() -> int:
    with new_session(get_settings()) as s:
        return int(s.scalar(text(REFERENCED)) or 0)


def assert_blobs_owned() -> None:
    with new_session(get_settings()) as s:
        stored = int(s.scalar(text("SELECT count(*) FROM pg_largeobject_metadata")) or 0)
        named = int(s.scalar(text(REFERENCED)) or 0)
    assert stored == named, f"{stored} large objects, but rows name {named}"


def job_rows(job_id: str) -> dict[str, int]:
    """Rows that name ``job_id``, per table (the job row under ``jobs``)."""
    tables = ["jobs", "job_tasks", "documents", "document_files", "units", "results"]
    tables.append("webhook_deliveries")
    with new_session(get_settings()) as s:
        return {
            t: int(
                s.scalar(
                    text(
                        f"SELECT count(*) FROM {t} WHERE {'id' if t == 'jobs' else 'job_id'} = :j"
                    ),
                    {"j": job_id},
                )
                or 0
            )
            for t in tables
        }


@pytest.fixture
def blobs_owned() -> Iterator[None]:
    yield
    assert_blobs_owned()
