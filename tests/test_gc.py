"""``docbatch gc`` and the beat's lifecycle pass (issue 21): a delete whose worker is
killed half-way is finished by the next pass; orphaned blobs and originals are removed
and reported. Every test ends with every large object owned by a row."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
from sqlalchemy import select, text

from docbatch.domain import deletion, jobs, publish
from docbatch.domain.files import FileDocument
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, Original, utcnow
from docbatch.worker.deletion import NAMESPACE
from docbatch.worker.lifecycle import lifecycle_pass
from tests.fakeworkers import fake_worker_env
from tests.files import make_html
from tests.fixtures import ROOT, WorkerProcess
from tests.storage import job_rows, large_objects

pytestmark = pytest.mark.usefixtures("blobs_owned")

DOCUMENTS = 10_000
FILES = 6


def _deleting_job() -> str:
    """A cancelled job of text documents and files, marked deleting; its delete not sent."""
    settings = get_settings()
    texts = [({"custom_id": f"d{i}", "text": f"text {i}."}, None) for i in range(DOCUMENTS)]
    files = [
        (FileDocument(f"f{i}.html", len(b), lambda b=b: io.BytesIO(b)), None)
        for i, b in enumerate(make_html(f"page {i}") for i in range(FILES))
    ]
    with unit_of_work(settings, publish=False) as s:
        job_id = jobs.create_job(
            s, settings, tenant="default", tasks=[{"type": "summarize"}], documents=texts + files
        ).job.id
    inline = settings.model_copy(update={"cancel_batch_documents": 10 * DOCUMENTS})
    with unit_of_work(settings, publish=False) as s:
        job = deletion.request_delete(s, "default", job_id, inline)
        assert job.status == "cancelled" and job.deleting_at is not None
    return job_id


def _left(job_id: str) -> dict[str, int] | None:
    with new_session(get_settings()) as s:
        job = s.get(Job, job_id)
        return None if job is None else dict(job.delete_left or {})


def _wait_for_the_dead_session_to_go(timeout: float = 30) -> None:
    """The killed worker's database session (and its delete's advisory lock) ends when
    the server notices the closed socket."""
    deadline = time.monotonic() + timeout
    while True:
        with new_session(get_settings()) as s:
            held = s.scalar(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :ns"),
                {"ns": NAMESPACE},
            )
        if not held:
            return
        assert time.monotonic() < deadline, "the killed worker's session is still there"
        time.sleep(0.05)


def test_a_delete_killed_half_way_is_finished_by_the_next_pass(private_queues):
    lifecycle_pass(get_settings(), inline=True)  # earlier tests' deletes, finished first
    before = large_objects()
    job_id = _deleting_job()
    assert large_objects() == before + FILES
    full = job_rows(job_id)
    env = fake_worker_env(private_queues, DOCBATCH_DELETE_BATCH_ROWS="50")
    worker = WorkerProcess("summarize", env=env).wait_ready()
    try:
        publish.publish_deletes([job_id], get_settings())
        deadline = time.monotonic() + 120
        # Killed as soon as the delete has made progress, well before it ends.
        while not (left := _left(job_id)) or left.get("results", 0) >= full["results"]:
            assert time.monotonic() < deadline, f"the delete never started:\n{worker.log[-2000:]}"
            time.sleep(0.005)
    finally:
        worker.kill()
    _wait_for_the_dead_session_to_go()
    half = job_rows(job_id)
    assert half["jobs"] == 1 and 0 < half["results"] < full["results"], half
    assert half["documents"] == full["documents"], "killed before the documents went"

    report = lifecycle_pass(get_settings(), inline=True)
    assert job_id in report.deletes_resumed
    assert report.rows_deleted >= sum(half.values()) - 1
    assert all(n == 0 for n in job_rows(job_id).values()), job_rows(job_id)
    assert large_objects() == before
    assert lifecycle_pass(get_settings(), inline=True).deletes_resumed == []


def test_gc_removes_orphaned_blobs_and_originals_and_says_so():
    before = large_objects()
    with transaction(get_settings()) as s:
        s.execute(text("SELECT lo_from_bytea(0, 'left behind by a manual DELETE')"))
        oid = int(s.scalar(text("SELECT lo_from_bytea(0, 'shared bytes')")))
        s.add(
            Original(
                tenant="default",
                sha256="0" * 64,
                blob_oid=oid,
                bytes=12,
                refs=2,
                created_at=utcnow(),
            )
        )
    assert large_objects() == before + 2
    out = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "gc"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["orphaned_blobs"] == 1, report
    assert report["orphaned_originals"] == 1, report
    assert large_objects() == before
    with new_session(get_settings()) as s:
        assert s.scalar(select(Original).where(Original.blob_oid == oid)) is None
