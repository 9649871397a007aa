"""What a tenant stores, and when it goes: ``GET /v1/usage/storage``, ``docbatch usage``,
``GET /v1/jobs/{id}/storage`` (the dashboard's job page) and the storage gauges.

Counts come from the counters the ledger keeps (``jobs.document_count``, the task
counters), so a tenant's figures cost a few aggregate statements, not a scan of its
documents; only the extracted text bytes read the documents that came from files.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docbatch.domain import tenants
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
    Document,
    DocumentFile,
    Job,
    JobTask,
    Original,
    StoredFile,
)

NEXT_EXPIRING = 10


def expires_at(job: Any, tenant_days: int) -> dt.datetime | None:
    """When retention deletes the job: its own retention capped by its tenant's (0:
    never); None while it runs, or kept forever."""
    if job.finished_at is None:
        return None
    days = [d for d in (job.retention_days, tenant_days) if d]
    if not days:
        return None
    finished = job.finished_at if job.finished_at.tzinfo else job.finished_at.replace(tzinfo=dt.UTC)
    return finished + dt.timedelta(days=min(days))


def _results(session: Session, *where: Any) -> int:
    n = session.scalar(
        select(func.coalesce(func.sum(JobTask.succeeded + JobTask.failed + JobTask.cancelled), 0))
        .join(Job, Job.id == JobTask.job_id)
        .where(*where)
    )
    return int(n or 0)


def _text_bytes(session: Session, *where: Any) -> int:
    n = session.scalar(
        select(func.coalesce(func.sum(func.length(Document.text)), 0))
        .join(DocumentFile, DocumentFile.document_id == Document.id)
        .join(Job, Job.id == Document.job_id)
        .where(*where)
    )
    return int(n or 0)


def job_storage(session: Session, job: Job, settings: Settings) -> dict[str, Any]:
    """One job's stored rows and bytes, and when retention deletes it."""
    policy = tenants.storage_policy(session, job.tenant, settings)
    files, original_bytes = session.execute(
        select(func.count(), func.coalesce(func.sum(DocumentFile.bytes), 0)).where(
            DocumentFile.job_id == job.id, DocumentFile.blob_oid.is_not(None)
        )
    ).one()
    text_bytes = _text_bytes(session, Job.id == job.id)
    expiry = expires_at(job, policy.retention_days)
    return {
        "job_id": job.id,
        "documents": job.document_count,
        "results": _results(session, Job.id == job.id),
        "original_files": int(files),
        "original_bytes": int(original_bytes),
        "extracted_text_bytes": text_bytes,
        "stored_bytes": int(original_bytes) + text_bytes,
        "keep_originals": job.keep_originals is not False,
        "retention_days": job.retention_days or policy.retention_days or None,
        "expires_at": expiry.isoformat() if expiry else None,
        "deleting": job.deleting_at is not None,
    }


def tenant_storage(session: Session, tenant: str, settings: Settings) -> dict[str, Any]:
    """A tenant's stored data, and what retention deletes next."""
    policy = tenants.storage_policy(session, tenant, settings)
    jobs_n, documents = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.document_count), 0)).where(
            Job.tenant == tenant
        )
    ).one()
    originals_n, original_bytes = session.execute(
        select(func.count(), func.coalesce(func.sum(Original.bytes), 0)).where(
            Original.tenant == tenant
        )
    ).one()
    files_n, files_bytes = session.execute(
        select(func.count(), func.coalesce(func.sum(StoredFile.bytes), 0)).where(
            StoredFile.tenant == tenant
        )
    ).one()
    return {
        "tenant": tenant,
        "jobs": int(jobs_n),
        "documents": int(documents),
        "results": _results(session, Job.tenant == tenant),
        "original_files": int(originals_n),
        "original_bytes": int(original_bytes),
        "extracted_text_bytes": _text_bytes(session, Job.tenant == tenant),
        "openai_files": int(files_n),
        "openai_file_bytes": int(files_bytes),
        "retention_days": policy.retention_days or None,
        "keep_originals": policy.keep_originals,
        "next_deletions": next_deletions(session, tenant, policy.retention_days),
    }


def next_deletions(
    session: Session, tenant: str, tenant_days: int, limit: int = NEXT_EXPIRING
) -> list[dict[str, Any]]:
    """The tenant's finished jobs retention deletes first: id, documents, when."""
    live = (Job.tenant == tenant, Job.deleting_at.is_(None), Job.finished_at.is_not(None))
    candidates = list(
        session.execute(
            select(Job.id, Job.document_count, Job.finished_at, Job.retention_days)
            .where(*live, Job.retention_days.is_not(None))
            .order_by(Job.finished_at)
            .limit(limit)
        )
    )
    if tenant_days:
        candidates += session.execute(
            select(Job.id, Job.document_count, Job.finished_at, Job.retention_days)
            .where(*live)
            .order_by(Job.finished_at)
            .limit(limit)
        )
    dated = {row.id: (expires_at(row, tenant_days), row.document_count) for row in candidates}
    soonest = sorted(
        ((when, job_id, n) for job_id, (when, n) in dated.items() if when is not None)
    )[:limit]
    return [
        {"job_id": job_id, "documents": n, "expires_at": when.isoformat()}
        for when, job_id, n in soonest
    ]


def storage_by_tenant(session: Session) -> dict[str, dict[str, int]]:
    """Per tenant, the cheap storage figures (the gauges): documents, originals' bytes,
    OpenAI files' bytes."""
    out: dict[str, dict[str, int]] = {}

    def put(tenant: str, key: str, value: Any) -> None:
        out.setdefault(tenant, {"documents": 0, "original_bytes": 0, "openai_file_bytes": 0})
        out[tenant][key] = int(value or 0)

    for tenant, n in session.execute(
        select(Job.tenant, func.sum(Job.document_count)).group_by(Job.tenant)
    ):
        put(tenant, "documents", n)
    for tenant, n in session.execute(
        select(Original.tenant, func.sum(Original.bytes)).group_by(Original.tenant)
    ):
        put(tenant, "original_bytes", n)
    for tenant, n in session.execute(
        select(StoredFile.tenant, func.sum(StoredFile.bytes)).group_by(StoredFile.tenant)
    ):
        put(tenant, "openai_file_bytes", n)
    return out
