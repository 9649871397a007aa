"""One job's status and counts for the poll path (``GET /v1/jobs/{id}``), in one query.

Clients poll this every second while a job runs (``docbatch submit --wait``, the dashboard),
so it is the api's most frequent request: one indexed query (the job joined to its task
counters) on a pooled connection, plain rows instead of ORM objects, and the answer
serialized once by pydantic. The same document as ``docbatch.domain.jobs.job_public``::

    >>> body = poll_job_json("default", "job_0123...", settings)  # JSON bytes, or NotFound
"""

from __future__ import annotations

from sqlalchemy import select

from docbatch.domain.jobs import public_of, unserved
from docbatch.schema.db import get_engine
from docbatch.schema.errors import NotFound
from docbatch.schema.models import JobPublic
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Job, JobTask

_COLUMNS = (
    Job.id,
    Job.tenant,
    Job.name,
    Job.status,
    Job.priority,
    Job.document_count,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.reuse_results,
    Job.deleting_at,
    Job.delete_left,
    JobTask.task,
    JobTask.params,
    JobTask.total,
    JobTask.succeeded,
    JobTask.failed,
    JobTask.cancelled,
    JobTask.chunks,
    JobTask.tokens,
    JobTask.reused,
)


def poll_job(tenant: str | None, job_id: str, settings: Settings) -> JobPublic:
    """``job_id`` as ``JobPublic`` if ``tenant`` owns it (any tenant if None); else NotFound."""
    query = (
        select(*_COLUMNS)
        .select_from(Job)
        .outerjoin(JobTask, JobTask.job_id == Job.id)
        .where(Job.id == job_id)
    )
    with get_engine(settings).connect() as conn:
        rows = conn.execute(query).all()
        if not rows or (tenant is not None and rows[0].tenant != tenant):
            raise NotFound(f"job {job_id} not found")
        job = rows[0]
        tasks = [r for r in rows if r.task is not None]
        public = public_of(job, tasks)
        public.warnings = unserved(conn, public, settings)
    return public


def poll_job_json(tenant: str | None, job_id: str, settings: Settings) -> bytes:
    """``poll_job`` as the JSON body of the poll answer."""
    return poll_job(tenant, job_id, settings).model_dump_json().encode()
