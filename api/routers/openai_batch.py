"""The OpenAI Batch API: ``/v1/files`` and ``/v1/batches`` (``domain/openai/``).

The official ``openai`` client works against these unchanged::

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=DOCBATCH_KEY)
    f = client.files.create(file=open("requests.jsonl", "rb"), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                              completion_window="24h")
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from docbatch.api.deps import SessionDep, SettingsDep, TenantDep
from docbatch.api.ingest import body_limit, check_declared_length, spool_body
from docbatch.domain import blobs, jobs
from docbatch.domain.openai import batches, files, models, render
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.errors import BatchApiError, PayloadTooLarge
from docbatch.schema.models import BatchCreate
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Batch, StoredFile, utcnow
from docbatch.schema.validation import parse_json, validate_batch_create

log = logging.getLogger("docbatch.api")
router = APIRouter(prefix="/v1", tags=["openai-batch"])


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


# -- files -----------------------------------------------------------------------------


@router.post("/files")
async def create_file(request: Request, tenant: TenantDep, settings: SettingsDep) -> JSONResponse:
    """Upload a batch input file (multipart ``file`` + ``purpose=batch``); each line is
    checked as it is stored, and a bad line is a 400 naming it."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise BatchApiError(
            415,
            f"a file upload is multipart/form-data (fields 'file' and 'purpose'), not "
            f"{content_type or 'a body with no Content-Type'}",
        )
    limit = settings.max_request_bytes
    longest = files.line_limit(settings)

    async def limited() -> Any:
        # Both limits hold while the body arrives: an over-long line is refused before it
        # is received whole (store_upload reads each line bounded too).
        size = run = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    "file", f"upload is over {limit} bytes (DOCBATCH_MAX_REQUEST_BYTES)"
                )
            run = _longest_run(chunk, run, longest)
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise BatchApiError(400, f"malformed multipart/form-data: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BatchApiError(400, "a file upload needs the JSONL file in field 'file'", param="file")
    purpose = form.get("purpose")
    if not isinstance(purpose, str):
        raise BatchApiError(400, "purpose is required ('batch')", param="purpose")
    expires = files.expires_after(
        form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    )

    def store() -> dict[str, Any]:
        upload.file.seek(0)
        with transaction(settings) as s:
            stored = files.store_upload(
                s,
                settings,
                tenant=tenant,
                filename=upload.filename or "upload.jsonl",
                purpose=purpose,
                stream=upload.file,
                expires_after_seconds=expires,
            )
            return render.file_object(stored)

    try:
        return JSONResponse(await run_in_threadpool(store))
    finally:
        await upload.close()


def _longest_run(chunk: bytes, run: int, longest: int) -> int:
    """The bytes since the last newline after ``chunk``; raises once a line (a run with no
    newline) is longer than ``longest``."""
    start = 0
    while (end := chunk.find(b"\n", start)) != -1:
        if run + end - start > longest:
            break
        run, start = 0, end + 1
    else:
        run += len(chunk) - start
        if run <= longest:
            return run
    raise BatchApiError(
        400,
        f"a line of the file is over {longest} bytes; a request line may hold at most "
        "DOCBATCH_MAX_DOCUMENT_BYTES of text",
        code="line_too_long",
        param="file",
    )


@router.get("/files")
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    query = select(StoredFile).where(StoredFile.tenant == tenant)
    if purpose:
        query = query.where(StoredFile.purpose == purpose)
    key = (StoredFile.created_at, StoredFile.id)
    if after:
        anchor = session.get(StoredFile, after)
        if anchor is not None and anchor.tenant == tenant:
            cut = (anchor.created_at, anchor.id)
            query = query.where(_beyond(key, cut, order))
    ordering = [k.asc() if order == "asc" else k.desc() for k in key]
    found = session.scalars(query.order_by(*ordering).limit(limit + 1)).all()
    return _page([render.file_object(f) for f in found[:limit]], len(found) > limit)


def _beyond(key: tuple[Any, Any], cut: tuple[Any, Any], order: str) -> Any:
    from sqlalchemy import tuple_

    return tuple_(*key) > tuple_(*cut) if order == "asc" else tuple_(*key) < tuple_(*cut)


@router.get("/files/{file_id}")
def get_file(file_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    return render.file_object(files.owned_file(session, tenant, file_id))


@router.get("/files/{file_id}/content")
def get_file_content(file_id: str, tenant: TenantDep, settings: SettingsDep) -> StreamingResponse:
    """The file's bytes; a running batch's output and error files are rendered from the
    results so far (they are complete once the batch ends)."""
    with new_session(settings) as s:
        found = files.owned_file(s, tenant, file_id)
        oid = found.blob_oid
        batch = None
        if oid is None:
            batch = s.scalar(
                select(Batch).where(
                    (Batch.output_file_id == file_id) | (Batch.error_file_id == file_id)
                )
            )
    body: Iterator[bytes]
    if oid is not None:
        body = blobs.read(oid, settings)
    elif batch is not None:
        body = render.blocks(
            render.render_lines(settings, batch, errors=batch.error_file_id == file_id)
        )
    else:
        body = iter(())
    return StreamingResponse(body, media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def delete_file(file_id: str, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    with transaction(settings) as s:
        files.delete_file(s, tenant, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


# -- batches ---------------------------------------------------------------------------


def _create_batch(tenant: str, settings: Settings, request: BatchCreate) -> str:
    # The batch job's units are published once this commits (its outbox).
    with unit_of_work(settings) as s:
        batch, _new = batches.create_batch(s, settings, tenant=tenant, request=request)
        return batch.id


@router.post("/batches")  # its body's schema is BatchCreate (api/openapi.py)
async def create_batch(request: Request, tenant: TenantDep, settings: SettingsDep) -> JSONResponse:
    """Create a batch (``BatchCreate``): a field of the wrong shape is a 422 naming it, an
    endpoint this deployment does not serve or an input file that is not ``purpose=batch``
    a 400, as OpenAI answers them."""
    limit, setting = body_limit("json", settings)
    check_declared_length(request.headers, limit, setting)
    spool, _digest = await spool_body(request.stream(), limit, setting)
    with spool:
        raw = parse_json(spool.read(), settings, "body", what="is not valid JSON")
    body = validate_batch_create(raw, settings)
    batch_id = await run_in_threadpool(_create_batch, tenant, settings, body)
    return JSONResponse(await run_in_threadpool(_read_batch, tenant, batch_id, settings))


def _read_batch(
    tenant: str, batch_id: str, settings: Settings, partial_files: bool = False
) -> dict[str, Any]:
    # A read only reads: the beat's batch tick finalizes and expires (worker/batches.py).
    with new_session(settings) as s:
        batch = batches.owned_batch(s, tenant, batch_id)
        return batches.describe(s, batch, partial_files=partial_files)


# docbatch's own opt-in (``extra_query={"partial_files": "true"}`` in the openai client).
PartialFiles = Annotated[
    bool,
    Query(
        description="docbatch only: show the output and error file ids while the batch runs "
        "(their content is the requests done so far); OpenAI sets them when it has ended"
    ),
]


@router.get("/batches/{batch_id}")
def get_batch(
    batch_id: str, tenant: TenantDep, settings: SettingsDep, partial_files: PartialFiles = False
) -> dict[str, Any]:
    return _read_batch(tenant, batch_id, settings, partial_files)


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    with unit_of_work(settings) as s:
        batch = batches.owned_batch(s, tenant, batch_id)
        if batch.job_id is not None and batch.finalized_at is None:
            if batch.cancelling_at is None:
                batch.cancelling_at = utcnow()
            jobs.cancel_job(
                s, tenant, batch.job_id, inline_documents=settings.cancel_batch_documents
            )
    return _read_batch(tenant, batch_id, settings)


@router.get("/batches")
def list_batches(
    session: SessionDep,
    tenant: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    partial_files: PartialFiles = False,
) -> dict[str, Any]:
    query = select(Batch).where(Batch.tenant == tenant)
    key = (Batch.created_at, Batch.id)
    if after:
        anchor = session.get(Batch, after)
        if anchor is not None and anchor.tenant == tenant:
            query = query.where(_beyond(key, (anchor.created_at, anchor.id), "desc"))
    found = session.scalars(query.order_by(*(k.desc() for k in key)).limit(limit + 1)).all()
    page = [batches.describe(session, b, partial_files=partial_files) for b in found[:limit]]
    return _page(page, len(found) > limit)


# -- models ----------------------------------------------------------------------------


@router.get("/models")
def list_models(tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """The deployments (and DOCBATCH_OPENAI_MODELS aliases) a batch line may name."""
    return {"object": "list", "data": models.list_models(settings)}


@router.get("/models/{model_id:path}")
def retrieve_model(model_id: str, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    return models.get_model(model_id, settings)
