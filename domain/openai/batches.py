"""Batches: create one (its job built from the input file's lines), its status and
request counts read from the job, expiry and the one finalization that writes its output
and error files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain import blobs, jobs
from docbatch.domain.openai import render
from docbatch.domain.openai.convert import RequestLines, endpoint_task, supported_endpoints
from docbatch.domain.openai.files import owned_file
from docbatch.schema.errors import BatchApiError, InputError, NotFound
from docbatch.schema.models import BatchCreate
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
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
    )
    session.add(batch)
    session.flush()
    lines = RequestLines(source.blob_oid, endpoint, task, settings)
    lines.first_params()
    new: jobs.NewJob | None = None
    if lines.params is not None:
        try:
            with session.begin_nested():  # a job with no documents leaves nothing behind
                new = jobs.create_job(
                    session,
                    settings,
                    tenant=tenant,
                    tasks=[lines.params],
                    documents=lines.documents(),
                    name=f"batch {batch.id}",
                )
        except InputError as exc:
            if exc.field != "documents":
                raise BatchApiError(400, str(exc), param="input_file_id") from None
            new = None  # every line failed: no job
    else:
        for _ in lines.documents():  # every line is an error: collect them
            pass
    batch.model, batch.total, batch.multi_input = lines.model, lines.total, lines.multi_input
    if lines.params is not None:  # the job task's key: the deployment the lines named
        batch.task = lines.params.get("model") or task
    batch.line_errors = lines.line_errors
    if lines.url_errors:
        # OpenAI fails the whole batch when a line's url is not its endpoint.
        batch.errors = lines.url_errors
        new = None
    if new is not None:
        batch.job_id = new.job.id
    else:
        session.flush()
    return batch, new


def owned_batch(session: Session, tenant: str, batch_id: str) -> Batch:
    found = session.get(Batch, batch_id)
    if found is None or found.tenant != tenant:
        raise NotFound(f"No such Batch object: {batch_id}")
    return found


def request_counts(session: Session, batch: Batch) -> render.Counts:
    errors = len(batch.line_errors or [])
    if batch.job_id is None:
        return render.Counts(batch.total, 0, batch.total if batch.errors is None else 0, 0)
    if not batch.multi_input:
        row = session.get(JobTask, (batch.job_id, batch.task))
        assert row is not None
        done = row.succeeded
        failed = row.failed + row.cancelled + errors
        return render.Counts(batch.total, done, failed, batch.total - done - failed)
    done = failed = 0
    for states in _line_states(session, batch):
        if None in states:
            continue
        if all(s == "succeeded" for s in states):
            done += 1
        else:
            failed += 1
    failed += errors
    return render.Counts(batch.total, done, failed, batch.total - done - failed)


def _line_states(session: Session, batch: Batch) -> Iterator[list[str | None]]:
    rows = session.execute(
        select(Document.meta, Result.status)
        .outerjoin(Result, (Result.document_id == Document.id) & (Result.task == batch.task))
        .where(Document.job_id == batch.job_id)
        .order_by(Document.seq)
    )
    current: int | None = None
    states: list[str | None] = []
    for meta, status in rows:
        line = meta["openai"][0]
        if line != current and current is not None:
            yield states
            states = []
        current = line
        states.append(status)
    if current is not None:
        yield states


def status_of(session: Session, batch: Batch, job: Job | None) -> str:
    if batch.errors:
        return "failed"
    if job is None:
        return "completed"
    job_status = JobStatus(job.status)
    if not job_status.terminal:
        return "cancelling" if job_status is JobStatus.cancelling else "in_progress"
    if batch.finalized_at is None:
        return "finalizing"
    if batch.expired_at is not None:
        return "expired"
    return "cancelled" if job_status is JobStatus.cancelled else "completed"


def refresh(session: Session, batch: Batch) -> None:
    """Move a batch along on read: expire it past its window, finalize it once its job ended."""
    job = session.get(Job, batch.job_id) if batch.job_id else None
    if job is not None and not JobStatus(job.status).terminal and utcnow() > batch.expires_at:
        batch.expired_at = utcnow()
        jobs.cancel_job(session, batch.tenant, job.id)
        session.flush()
    if batch.finalized_at is None and (job is None or JobStatus(job.status).terminal):
        finalize(session, batch)


def finalize(session: Session, batch: Batch) -> None:
    """Write the output and error files to blobs once; from then on they are served as is."""
    for file_id, errors in ((batch.output_file_id, False), (batch.error_file_id, True)):
        f = session.get(StoredFile, file_id)
        assert f is not None
        oid = blobs.create(session)
        offset = 0
        for block in render.blocks(render.render_lines(batch, errors=errors)):
            blobs.write(session, oid, offset, block)
            offset += len(block)
        f.blob_oid, f.bytes = oid, offset
    batch.finalized_at = utcnow()


def describe(session: Session, batch: Batch) -> dict[str, Any]:
    """The batch as OpenAI's Batch object."""
    job = session.get(Job, batch.job_id) if batch.job_id else None
    return render.batch_object(
        batch, job, status_of(session, batch, job), request_counts(session, batch)
    )
