"""Deleting a job: at once for the client, in bounded batches underneath (like cancel).

``DELETE /v1/jobs/{id}`` calls ``request_delete``: a job still running is cancelled
first, the job is marked ``deleting`` (``jobs.deleting_at``) and the delete goes into
the transaction's outbox for the maintenance queue (docbatch.worker.deletion). Once the
job has ended (a cancelled job's running units stop at their next batch; the unit that
ends it puts the delete in its outbox), ``delete_batch`` removes its rows
DOCBATCH_DELETE_BATCH_ROWS at a time, each batch a short transaction of its own, in this
order::

    webhook_deliveries -> results -> document_files (+ their blobs) -> documents
    -> units -> job_tasks -> the job row

The job row goes last, so a delete that dies half-way leaves a job still marked
``deleting``, which the beat's lifecycle pass (docbatch.domain.lifecycle) finishes. No
batch locks the job row against anything but another delete of it, and no batch touches
another job's rows. A blob goes in the transaction that removes the last row naming it
(docbatch.domain.originals). A message for a unit already deleted finds no unit and is
skipped by the worker (``ledger.claim_unit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from docbatch.domain import jobs, ledger, originals
from docbatch.domain.outbox import outbox
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Batch as OpenAIBatch
from docbatch.schema.tables import (
    Document,
    DocumentFile,
    Job,
    JobStatus,
    JobTask,
    Result,
    Unit,
    WebhookDelivery,
    utcnow,
)

# The tables of a job, in the order their rows go (the job row after all of them).
TABLES: dict[str, Any] = {
    "webhook_deliveries": WebhookDelivery,
    "results": Result,
    "document_files": DocumentFile,
    "documents": Document,
    "units": Unit,
    "job_tasks": JobTask,
}


def request_delete(session: Session, tenant: str | None, job_id: str, settings: Settings) -> Job:
    """Mark the job deleting (cancelling it first if it runs) and send its delete; returns
    the job. Asked again, the delete is sent again (the first message may be lost)."""
    job = jobs.get_job(session, tenant, job_id)
    if job.deleting_at is None and not JobStatus(job.status).terminal:
        job = jobs.cancel_job(
            session, tenant, job_id, inline_documents=settings.cancel_batch_documents
        )
    job = ledger.lock_job(session, job.id)
    if job.deleting_at is None:
        job.deleting_at = utcnow()
        job.delete_reason = "request"
    if JobStatus(job.status).terminal:
        outbox(session).add_delete(job.id)
    # else: the unit that ends the job sends it (ledger.finalize_job_if_done).
    return job


def count_left(session: Session, job_id: str) -> dict[str, int]:
    """The job's rows per table (what a delete still has to remove)."""
    left = {}
    for name, model in TABLES.items():
        left[name] = int(
            session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))
            or 0
        )
    return left


@dataclass
class Batch:
    """What one ``delete_batch`` did."""

    table: str | None  # None: the job row went (the delete is over)
    rows: int
    blobs: int = 0

    @property
    def done(self) -> bool:
        return self.table is None


def delete_batch(session: Session, job_id: str, max_rows: int) -> Batch | None:
    """Delete up to ``max_rows`` rows of the job's first table that has any (the job row
    once none is left), in the caller's transaction. None when the job is not (or no
    longer) there, or not ready: not marked deleting, or not ended yet."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.deleting_at is None or not JobStatus(job.status).terminal:
        return None
    left = dict(job.delete_left or {})
    if not left:
        left = count_left(session, job_id)
    for name, model in TABLES.items():
        unlinked = 0
        if model is DocumentFile:
            rows = session.execute(
                select(DocumentFile.document_id, DocumentFile.blob_oid)
                .where(DocumentFile.job_id == job_id)
                .limit(max_rows)
            ).all()
            ids = [r.document_id for r in rows]
            if ids:
                session.execute(delete(DocumentFile).where(DocumentFile.document_id.in_(ids)))
                unlinked = originals.release(session, [r.blob_oid for r in rows])
        elif model is JobTask:  # one row per task: all at once
            ids = list(session.scalars(select(JobTask.task).where(JobTask.job_id == job_id)))
            if ids:
                session.execute(delete(JobTask).where(JobTask.job_id == job_id))
        else:
            ids = list(
                session.scalars(select(model.id).where(model.job_id == job_id).limit(max_rows))
            )
            if ids:
                session.execute(delete(model).where(model.id.in_(ids)))
        if ids:
            left[name] = max(0, int(left.get(name, 0)) - len(ids))
            job.delete_left = left
            return Batch(name, len(ids), unlinked)
        left[name] = 0
    _deleted_webhook(session, job)
    # A batch whose job is deleted reads ``expired`` (its files stay until deleted).
    session.execute(
        update(OpenAIBatch)
        .where(OpenAIBatch.job_id == job_id, OpenAIBatch.expired_at.is_(None))
        .values(expired_at=utcnow(), finalized_at=func.coalesce(OpenAIBatch.finalized_at, utcnow()))
    )
    session.execute(delete(Job).where(Job.id == job_id))
    return Batch(None, 1)


def _deleted_webhook(session: Session, job: Job) -> None:
    """A job with a webhook gets ``job.deleted`` once its rows are gone: the delivery
    outlives the job (no job row to name), carrying the job's last document."""
    if not job.webhook_url:
        return
    now = utcnow()
    payload = {
        "id": job.id,
        "name": job.name,
        "status": "deleted",
        "reason": job.delete_reason or "request",
        "documents": job.document_count,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "deleted_at": now.isoformat(),
    }
    delivery = session.execute(
        insert(WebhookDelivery)
        .values(
            job_id=None,
            tenant=job.tenant,
            payload=payload,
            url=job.webhook_url,
            event="job.deleted",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(WebhookDelivery.id)
    ).scalar_one()
    outbox(session).add_webhooks([delivery])


def run_delete(
    job_id: str,
    settings: Settings,
    transaction: Callable[[], Any],
    on_batch: Callable[[Batch], None] | None = None,
) -> tuple[int, int, bool]:
    """Delete the job batch by batch, each batch in a ``transaction()`` of its own;
    returns (rows, blobs, whether the job is gone)."""
    rows = unlinked = 0
    while True:
        with transaction() as s:
            batch = delete_batch(s, job_id, settings.delete_batch_rows)
        if batch is None:
            return rows, unlinked, False
        rows += batch.rows
        unlinked += batch.blobs
        if on_batch is not None:
            on_batch(batch)
        if batch.done:
            return rows, unlinked, True


def deleting_jobs(session: Session, limit: int = 1000) -> list[str]:
    """Jobs marked deleting that have ended: an interrupted or lost delete to resume."""
    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.deleting_at.is_not(None),
                Job.status.in_([s.value for s in JobStatus if s.terminal]),
            )
            .order_by(Job.deleting_at)
            .limit(limit)
        )
    )
