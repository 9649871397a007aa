"""The data lifecycle on the embedded SQLite default (``docbatch run``'s database): a job's
delete removes its rows and its files' bytes (``blobs`` rows, SQLite has no large
objects), originals are shared by content, and the gc pass removes an orphaned blob."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from docbatch.domain import deletion, jobs
from docbatch.domain.files import FileDocument
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.migrate import upgrade
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Blob, Document, Job
from docbatch.worker.deletion import delete_job
from docbatch.worker.lifecycle import lifecycle_pass

pytestmark = pytest.mark.fast


def _blobs(settings: Settings) -> int:
    with new_session(settings) as s:
        return int(s.scalar(select(func.count()).select_from(Blob)) or 0)


def test_delete_and_gc_on_sqlite(tmp_path: Path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'docbatch.db'}", broker_url="memory://"
    )
    upgrade(settings.database_url)
    page = b"<html><body><p>The same page.</p></body></html>"
    documents = [({"custom_id": "t", "text": "Some text."}, None)] + [
        (FileDocument(f"p{i}.html", len(page), lambda: io.BytesIO(page)), None) for i in range(3)
    ]
    with unit_of_work(settings, publish=False) as s:
        job_id = jobs.create_job(
            s, settings, tenant="default", tasks=[{"type": "summarize"}], documents=documents
        ).job.id
    assert _blobs(settings) == 1, "three files with the same bytes: one blob"

    with unit_of_work(settings, publish=False) as s:
        job = deletion.request_delete(s, "default", job_id, settings)
        assert job.deleting_at is not None and job.status == "cancelled"
    assert delete_job(job_id, settings.model_copy(update={"delete_batch_rows": 2})) > 0
    with new_session(settings) as s:
        assert s.get(Job, job_id) is None
        assert s.scalar(select(func.count()).where(Document.job_id == job_id)) == 0
    assert _blobs(settings) == 0

    with transaction(settings) as s:
        s.execute(insert(Blob).values(data=b"orphan"))
    report = lifecycle_pass(settings, inline=True)
    assert report.orphaned_blobs == 1 and _blobs(settings) == 0
