"""/v1/jobs: submit, inspect, stream results and errors, cancel, delete, list."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.exc import IntegrityError

from docbatch.api import metrics as api_metrics
from docbatch.api.deps import SessionDep, SettingsDep, TenantDep
from docbatch.api.ingest import (
    body_kind,
    body_limit,
    check_declared_length,
    is_multipart,
    is_ndjson,
    multipart_fields,
    parse_json_body,
    parse_multipart_body,
    parse_ndjson_body,
    request_digest,
    spool_body,
)
from docbatch.domain import deletion, jobs, tracing
from docbatch.domain.export import iter_parquet
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.polling import poll_job_json
from docbatch.domain.results import iter_result_pages
from docbatch.schema.db import new_session
from docbatch.schema.errors import InputError
from docbatch.schema.models import JobPublic, JobsPublic
from docbatch.schema.settings import Settings
from docbatch.schema.tables import JobTask

log = logging.getLogger("docbatch.api")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _submit(
    spool: Any,
    body_digest: str,
    content_type: str,
    query: dict[str, str],
    tenant: str,
    settings: Settings,
    idempotency_key: str | None,
) -> tuple[JobPublic, bool]:
    with tracing.span("submit", tenant=tenant) as sp:
        public, existed = _create(
            spool, body_digest, content_type, query, tenant, settings, idempotency_key
        )
        tracing.annotate(sp, job_id=public.id, documents=public.documents, existing=existed)
        return public, existed


def _create(
    spool: Any,
    body_digest: str,
    content_type: str,
    query: dict[str, str],
    tenant: str,
    settings: Settings,
    idempotency_key: str | None,
) -> tuple[JobPublic, bool]:
    multipart = is_multipart(content_type)
    try:
        if multipart:  # the fields and a boundary-free digest, before the transaction
            fields, body_digest = multipart_fields(spool, content_type)
            query = {**query, **fields}
        digest = request_digest(body_digest, content_type, query)
        # The job's queued units are published once this commits (its outbox).
        with unit_of_work(settings) as s:
            existing = jobs.find_idempotent(s, tenant, idempotency_key, digest)
            if existing is not None:
                return jobs.job_public(s, existing), True
            if multipart:
                sub = parse_multipart_body(spool, content_type, query, settings)
            elif is_ndjson(content_type):
                sub = parse_ndjson_body(spool, query, settings)
            else:
                sub = parse_json_body(spool, settings)
            new = jobs.create_job(
                s,
                settings,
                tenant=tenant,
                tasks=sub.tasks,
                documents=sub.documents,
                name=sub.name,
                priority=sub.priority,
                webhook_url=sub.webhook_url,
                idempotency_key=idempotency_key,
                request_hash=digest,
                reuse_results=sub.reuse_results,
                retention_days=sub.retention_days,
                keep_originals=sub.keep_originals,
            )
            job_id = new.job.id
        api_metrics.ingested(new.job.document_count, new.queued_units)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the race: answer with its job.
        with new_session(settings) as s:
            existing = jobs.find_idempotent(s, tenant, idempotency_key, digest)
            if existing is None:
                raise
            return jobs.job_public(s, existing), True
    finally:
        spool.close()
    with new_session(settings) as s:
        return jobs.job_public(s, jobs.get_job(s, tenant, job_id), settings), False


@router.post("", status_code=202, response_model=JobPublic)
async def create_job(
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Submit a job: a JSON body ``{tasks, documents, ...}``, or an NDJSON body of
    documents with ``?tasks=tags,summarize`` (Content-Type ``application/x-ndjson``), or
    a multipart upload of files (``-F file=@docs.jsonl -F file=@report.pdf -F
    file=@inbox.zip -F tasks=tags``): NDJSON files of documents, and files of any kind
    the extract stage reads (PDF, DOCX, HTML, e-mail, text, zip/tar), each a document
    named by its file name."""
    content_type = request.headers.get("content-type", "")
    if "webhook_url" in request.query_params:
        # Query strings end up in access logs and proxies' logs; webhook URLs are secrets.
        raise InputError(
            "webhook_url",
            "is not accepted in the query string (it would be logged); send it in a JSON "
            "body or as a multipart form field (-F webhook_url=...)",
        )
    kind = body_kind(content_type)
    limit, setting = body_limit(kind, settings)
    check_declared_length(request.headers, limit, setting)
    query = dict(request.query_params)
    line_limit = settings.max_line_bytes if kind == "ndjson" else None
    spool, digest = await spool_body(request.stream(), limit, setting, line_limit)
    job, existing = await run_in_threadpool(
        _submit,
        spool,
        digest,
        content_type,
        query,
        tenant,
        settings,
        idempotency_key,
    )
    return JSONResponse(job.model_dump(mode="json"), status_code=200 if existing else 202)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: str | None = None,
) -> JobsPublic:
    found, count = jobs.list_jobs(session, tenant, status=status, limit=limit, before=before)
    return JobsPublic(data=[jobs.job_public(session, j) for j in found], count=count)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> Response:
    # The poll path: one query in one thread hop, serialized once (no ORM, no re-validation
    # of the response model).
    body = await run_in_threadpool(poll_job_json, tenant, job_id, settings)
    return Response(body, media_type="application/json")


def _ndjson(pages: Iterator[list[str]]) -> Iterator[bytes]:
    # One chunk per page of documents (~1000 lines): each chunk of a sync iterator costs a
    # thread hand-off in the server, so small chunks cost more than the lines in them.
    for lines in pages:
        yield ("\n".join(lines) + "\n").encode()


def _task_names(session: Any, job_id: str) -> list[str]:
    from sqlalchemy import select

    return list(session.scalars(select(JobTask.task).where(JobTask.job_id == job_id)))


def _owned_task_names(tenant: str, job_id: str, settings: Settings) -> list[str]:
    # A short session of its own: the stream below takes another connection, and holding
    # this one through the stream can exhaust the pool under load (each request waiting
    # for a second connection while holding a first).
    with new_session(settings) as s:
        jobs.get_job(s, tenant, job_id)
        return _task_names(s, job_id)


@router.get("/{job_id}/results", response_model=None)
def get_results(
    job_id: str,
    tenant: TenantDep,
    settings: SettingsDep,
    format: Annotated[str, Query(pattern="^(ndjson|parquet)$")] = "ndjson",
    vectors: Annotated[str, Query(pattern="^(floats|base64)$")] = "floats",
) -> StreamingResponse:
    """NDJSON, one line per document in submission order; readable while the job runs.

    ``?vectors=base64`` sends vectors as base64 float32; ``?format=parquet`` returns a
    Parquet file (see ``docbatch.domain.export``)."""
    tasks = _owned_task_names(tenant, job_id, settings)
    if format == "parquet":
        return StreamingResponse(
            iter_parquet(job_id, tasks, settings.results_page_size, settings),
            media_type="application/vnd.apache.parquet",
            headers={"content-disposition": f'attachment; filename="{job_id}.parquet"'},
        )
    pages = iter_result_pages(
        job_id, tasks, page_size=settings.results_page_size, vectors=vectors, settings=settings
    )
    return StreamingResponse(_ndjson(pages), media_type="application/x-ndjson")


@router.get("/{job_id}/errors")
def get_errors(
    job_id: str,
    tenant: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> StreamingResponse:
    """NDJSON of the failed documents only, each with the failing tasks' reasons;
    ``?limit=N`` stops after N documents (the dashboard shows the first few)."""
    tasks = _owned_task_names(tenant, job_id, settings)
    pages = iter_result_pages(
        job_id,
        tasks,
        only_failed=True,
        page_size=settings.results_page_size,
        settings=settings,
    )
    if limit is not None:
        pages = _first_lines(pages, limit)
    return StreamingResponse(_ndjson(pages), media_type="application/x-ndjson")


def _first_lines(pages: Iterator[list[str]], limit: int) -> Iterator[list[str]]:
    for lines in pages:
        yield lines[:limit]
        limit -= len(lines)
        if limit <= 0:
            return


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> JobPublic:
    """Mark the job cancelling (a small job's queued units are closed at once); the sweep
    that closes a big job's in batches is sent after the commit (docbatch.domain.jobs)."""
    with unit_of_work(settings) as s:
        jobs.cancel_job(s, tenant, job_id, inline_documents=settings.cancel_batch_documents)
    with new_session(settings) as s:
        return jobs.job_public(s, jobs.get_job(s, tenant, job_id))


@router.delete("/{job_id}", status_code=202, response_model=JobPublic)
def delete_job(job_id: str, tenant: TenantDep, settings: SettingsDep) -> JobPublic:
    """Delete the job and everything stored for it: documents, results, units, extracted
    text, original files, pending webhooks. A running job is cancelled first. Answers at
    once with status ``deleting`` (``delete_left``: the rows still to go); the rows go in
    batches off the request path (docbatch.domain.deletion), the job row last, after
    which the job is a 404."""
    # The answer is read in the transaction: the job may be gone a moment after it commits.
    with unit_of_work(settings) as s:
        job = deletion.request_delete(s, tenant, job_id, settings)
        return jobs.job_public(s, job)
