"""Batches: create one (its job built from the input file's lines), its status and
request counts read from the job, expiry and the one finalization that writes its output
and error files."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docbatch.domain import blobs, jobs
from docbatch.domain.openai import render
from docbatch.domain.openai.convert import (
    GENERATE_ENDPOINTS,
    RequestLines,
    TooManyDocuments,
    deployment_of,
    endpoint_task,
    supported_endpoints,
)
from docbatch.domain.openai.files import owned_file
from docbatch.schema.errors import BatchApiError, InputError, NotFound, QuotaExceeded
from docbatch.schema.models import BatchCreate
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
    TERMINAL_JOB_STATUSES,
    Batch,
    Document,
    Job,
    JobStatus,
    JobTask,
    Result,
    StoredFile,
    new_batch_id,
    utcnow,
)

COMPLETION_WINDOWS = {"24h": dt.timedelta(hours=24)}


def create_batch(
    session: Session, settings: Settings, *, tenant: str, request: BatchCreate
) -> tuple[Batch, jobs.NewJob | None]:
    """Build the batch and its job from a checked create request; the unit of work's outbox
    publishes the job's units after commit."""
    endpoint = request.endpoint
    task = endpoint_task(endpoint, settings)
    if task is None:
        raise BatchApiError(
            400,
            f"endpoint {endpoint!r} is not supported; supported: "
            + ", ".join(supported_endpoints(settings)),
            param="endpoint",
        )
    window = request.completion_window
    metadata = request.metadata
    file_id = request.input_file_id
    source = owned_file(session, tenant, file_id)
    if source.purpose != "batch" or source.blob_oid is None:
        raise BatchApiError(
            400,
            f"file {file_id} has purpose {source.purpose!r}, not 'batch'",
            param="input_file_id",
        )
    now = utcnow()
    batch_id = new_batch_id()
    files = [
        StoredFile(tenant=tenant, filename=f"{batch_id}_{kind}.jsonl", purpose="batch_output")
        for kind in ("output", "error")
    ]
    session.add_all(files)
    session.flush()
    batch = Batch(
        id=batch_id,
        tenant=tenant,
        endpoint=endpoint,
        task=task,
        input_file_id=file_id,
        output_file_id=files[0].id,
        error_file_id=files[1].id,
        completion_window=window,
        meta=metadata,
        created_at=now,
        expires_at=now + COMPLETION_WINDOWS[window],
        line_errors=[],
        total=0,
        multi_input=False,
        output_expires_after=(
            request.output_expires_after.seconds if request.output_expires_after else None
        ),
    )
    session.add(batch)
    session.flush()
    lines = RequestLines(source.blob_oid, endpoint, task, settings)
    lines.first_params()
    new: jobs.NewJob | None = None
    try:
        # Nothing of the job survives unless the whole file makes one: a job with no
        # documents, a url that is not the batch's endpoint, more documents than a job may
        # hold each roll the savepoint back (and the units it put in the outbox with it).
        with session.begin_nested():
            if lines.params is not None:
                new = jobs.create_job(
                    session,
                    settings,
                    tenant=tenant,
                    tasks=[],  # the router's: one per model the lines name
                    documents=lines.documents(),
                    name=f"batch {batch.id}",
                    router=lines,
                )
            else:
                for _ in lines.documents():  # every line is an error: collect them
                    pass
            if lines.url_errors:
                raise _NoJob
    except _NoJob:
        new = None
    except TooManyDocuments as exc:
        new = None
        lines.url_errors = []
        batch.errors = [{"code": "too_many_requests", "line": exc.line, "message": exc.message}]
    except QuotaExceeded as exc:
        # As OpenAI fails a batch over the enqueued-token limit: the batch is ``failed``.
        new = None
        lines.url_errors = []
        batch.errors = [{"code": "token_limit_exceeded", "line": None, "message": str(exc)}]
    except InputError as exc:
        if exc.field != "documents":
            raise BatchApiError(400, str(exc), param="input_file_id") from None
        new = None  # every line failed: no job
    batch.model, batch.total, batch.multi_input = lines.model, lines.total, lines.multi_input
    if lines.params is not None:  # the first line's deployment (each line has its own)
        batch.task = deployment_of(lines.params)
    batch.line_errors = lines.line_errors
    if lines.url_errors:
        # OpenAI fails the whole batch when a line's url is not its endpoint.
        batch.errors = lines.url_errors
    if new is not None:
        batch.job_id = new.job.id
    else:
        # Failed, or every line is an error: nothing will run, so the batch ends now.
        session.flush()
        finalize(session, settings, batch)
    return batch, new


class _NoJob(Exception):
    """The batch fails as a whole: its job is rolled back."""


def owned_batch(session: Session, tenant: str, batch_id: str) -> Batch:
    found = session.get(Batch, batch_id)
    if found is None or found.tenant != tenant:
        raise NotFound(f"No such Batch object: {batch_id}")
    return found


def request_counts(session: Session, batch: Batch) -> render.Counts:
    """OpenAI's ``request_counts``: from the job's counters when each line is one document,
    else from one grouped statement over the job's documents and results (a line is done
    when all its inputs are, failed when any failed). A batch job's tasks are the models
    its lines name, each document in exactly one of them."""
    errors = len(batch.line_errors or [])
    if batch.job_id is None:
        return render.Counts(batch.total, 0, batch.total if batch.errors is None else 0, 0)
    if not batch.multi_input:
        done, failed = (
            int(v or 0)
            for v in session.execute(
                select(
                    func.sum(JobTask.succeeded), func.sum(JobTask.failed + JobTask.cancelled)
                ).where(JobTask.job_id == batch.job_id)
            ).one()
        )
        failed += errors
        return render.Counts(batch.total, done, failed, batch.total - done - failed)
    line = Document.meta[("openai", 0)].as_integer()
    per_line = (
        select(
            func.count().label("inputs"),
            func.count(Result.status).label("ended"),
            func.count().filter(Result.status == "succeeded").label("succeeded"),
        )
        .select_from(Document)
        .outerjoin(Result, Result.document_id == Document.id)
        .where(Document.job_id == batch.job_id)
        .group_by(line)
        .subquery()
    )
    ended = per_line.c.ended == per_line.c.inputs
    done, failed = session.execute(
        select(
            func.count().filter(ended & (per_line.c.succeeded == per_line.c.inputs)),
            func.count().filter(ended & (per_line.c.succeeded < per_line.c.inputs)),
        ).select_from(per_line)
    ).one()
    failed += errors
    return render.Counts(batch.total, done, failed, batch.total - done - failed)


def status_of(batch: Batch, job: Job | None) -> str:
    if batch.errors:
        return "failed"
    if job is None:  # its job was deleted (DELETE /v1/jobs/{id}, retention): expired
        return "expired" if batch.expired_at is not None else "completed"
    job_status = JobStatus(job.status)
    if not job_status.terminal:
        return "cancelling" if job_status is JobStatus.cancelling else "in_progress"
    if batch.finalized_at is None:
        return "finalizing"
    if batch.expired_at is not None:
        return "expired"
    return "cancelled" if job_status is JobStatus.cancelled else "completed"


def due(session: Session, limit: int = 500) -> list[str]:
    """Batches the beat must move along: running past their window, or not finalized
    though their job ended."""
    now = utcnow()
    return list(
        session.scalars(
            select(Batch.id)
            .join(Job, Job.id == Batch.job_id)
            .where(
                Batch.finalized_at.is_(None),
                Job.status.in_(list(TERMINAL_JOB_STATUSES))
                | (Batch.expired_at.is_(None) & (Batch.expires_at < now)),
            )
            .order_by(Batch.created_at)
            .limit(limit)
        )
    )


def advance(session: Session, settings: Settings, batch_id: str) -> str | None:
    """Move one batch along, under its row lock (a second beat pass or tick skips a batch
    being moved): expire it past its window (its job is cancelled, the sweep goes in the
    outbox), or finalize it once its job ended. Returns what it did, or None."""
    batch = session.scalar(
        select(Batch)
        .where(Batch.id == batch_id, Batch.finalized_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    if batch is None or batch.job_id is None:
        return None
    job = session.get(Job, batch.job_id)
    if job is None:
        return None
    if not JobStatus(job.status).terminal:
        if batch.expired_at is None and utcnow() > batch.expires_at:
            batch.expired_at = utcnow()
            jobs.cancel_job(session, batch.tenant, job.id)
            return "expired"
        return None
    finalize(session, settings, batch)
    return "finalized"


def finalize(session: Session, settings: Settings, batch: Batch) -> None:
    """Write the output and error files to blobs, once (the caller holds the batch's row
    lock, or the batch is new); from then on they are served as is. A file its tenant
    deleted while the batch ran is not written again. A failed batch has none."""
    if not batch.errors:
        for file_id, errors in ((batch.output_file_id, False), (batch.error_file_id, True)):
            f = session.get(StoredFile, file_id)
            if f is None or f.blob_oid is not None:
                continue
            oid = blobs.create(session)
            offset = 0
            for block in render.blocks(render.render_lines(settings, batch, errors=errors)):
                blobs.write(session, oid, offset, block)
                offset += len(block)
            f.blob_oid, f.bytes = oid, offset
            if batch.output_expires_after:  # OpenAI's output_expires_after (created_at)
                f.expires_at = f.created_at + dt.timedelta(seconds=batch.output_expires_after)
    batch.usage = usage(session, batch)
    batch.finalized_at = utcnow()


def usage(session: Session, batch: Batch) -> dict[str, Any]:
    """OpenAI's ``batch.usage``: generation endpoints add up their lines' ``usage`` (one
    statement over the job's results); other tasks count the tokens their model read
    (the job's counters), and write none."""
    input_tokens = output_tokens = 0
    if batch.job_id is not None and batch.endpoint in GENERATE_ENDPOINTS:
        prompt = Result.output[("usage", "prompt_tokens")].as_integer()
        completion = Result.output[("usage", "completion_tokens")].as_integer()
        input_tokens, output_tokens = session.execute(
            select(func.coalesce(func.sum(prompt), 0), func.coalesce(func.sum(completion), 0))
            .where(Result.job_id == batch.job_id)
            .where(Result.status == "succeeded")
        ).one()
    elif batch.job_id is not None:
        tokens = select(func.sum(JobTask.tokens)).where(JobTask.job_id == batch.job_id)
        input_tokens = int(session.scalar(tokens) or 0)
    return {
        "input_tokens": int(input_tokens),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": int(output_tokens),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(input_tokens) + int(output_tokens),
    }


def describe(session: Session, batch: Batch, *, partial_files: bool = False) -> dict[str, Any]:
    """The batch as OpenAI's Batch object. Its output and error file ids are set once it
    has ended, as OpenAI sets them; ``partial_files`` shows them while it runs (their
    content is then the requests done so far)."""
    job = session.get(Job, batch.job_id) if batch.job_id else None
    return render.batch_object(
        batch,
        job,
        status_of(batch, job),
        request_counts(session, batch),
        partial_files=partial_files,
    )
