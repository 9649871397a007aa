"""The OpenAI Batch API as a view of docbatch jobs: files in, a job, files out.

An uploaded input file (``purpose=batch``) is checked line by line as it is stored
(``store_upload``). ``create_batch`` turns its request lines into the documents of ONE
ordinary job for the endpoint's task — the same units, queues, workers and results as
``/v1/jobs`` — and records which line each document came from (document metadata
``openai``: ``[line, custom_id, input index, inputs on the line, encoding]``). Lines the
job cannot take (unknown model, a bad body) are kept on the batch as line errors. The
output and error files are rendered from the results: live while the batch runs, and
written once to a blob when it ends (``finalize``).

Endpoint → task::

    /v1/embeddings              embed      (body.input: a string or a list of strings)
    /v1/docbatch/<task>         <task>     (body: the task's params plus "text")
    /v1/chat/completions, /v1/completions  generate, when the deployment runs it
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain import blobs, jobs
from docbatch.schema.db import new_session
from docbatch.schema.errors import BatchApiError, InputError, NotFound
from docbatch.schema.models import DocumentIn
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
from docbatch.schema.validation import validate_document

GENERATE_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
DOCBATCH_PREFIX = "/v1/docbatch/"
COMPLETION_WINDOWS = {"24h": dt.timedelta(hours=24)}
MAX_METADATA_PAIRS = 16
# What a task runs when no model is configured (the handlers' defaults), so a batch can
# name it: the bundled MiniLM answers to "all-MiniLM-L6-v2".
DEFAULT_MODELS = {"embed": "sentence-transformers/all-MiniLM-L6-v2"}


def endpoint_task(endpoint: str, settings: Settings) -> str | None:
    """The docbatch task that serves ``endpoint``; None for an endpoint we don't know."""
    if endpoint == "/v1/embeddings":
        return "embed"
    if endpoint in GENERATE_ENDPOINTS:
        return "generate"
    if endpoint.startswith(DOCBATCH_PREFIX):
        task = endpoint.removeprefix(DOCBATCH_PREFIX)
        return task if task in settings.models else None
    return None


def supported_endpoints(settings: Settings) -> list[str]:
    return ["/v1/embeddings", *GENERATE_ENDPOINTS] + [
        DOCBATCH_PREFIX + t for t in sorted(settings.models) if t != "embed"
    ]


# -- files ---------------------------------------------------------------------------


def _line_error(number: int, code: str, message: str) -> BatchApiError:
    return BatchApiError(400, f"line {number}: {message}", code=code, param="file", line=number)


def store_upload(
    session: Session,
    settings: Settings,
    *,
    tenant: str,
    filename: str,
    purpose: str,
    stream: IO[bytes],
) -> StoredFile:
    """Store an uploaded batch input file, checking each line as it goes into the blob.

    A line that is not a request (``{"custom_id", "method": "POST", "url", "body"}``),
    a duplicate ``custom_id`` or too many lines raise BatchApiError naming the line;
    the caller's transaction then rolls the blob back with the row.
    """
    if purpose != "batch":
        raise BatchApiError(
            400, f"purpose {purpose!r} is not supported; use 'batch'", param="purpose"
        )
    oid = blobs.create(session)
    digest = hashlib.sha256()
    seen: set[str] = set()
    offset = lines = 0
    pending: list[bytes] = []
    pending_size = 0
    for number, raw in enumerate(stream, start=1):
        if len(raw) > settings.max_document_bytes * 2 + 4096:
            raise _line_error(
                number,
                "line_too_long",
                f"is {len(raw)} bytes; a request line may hold at most "
                f"{settings.max_document_bytes} bytes of text (DOCBATCH_MAX_DOCUMENT_BYTES)",
            )
        if raw.strip():
            _check_request_line(raw, number, seen)
            lines += 1
            if lines > settings.max_documents_per_job:
                raise _line_error(
                    number,
                    "too_many_tasks",
                    f"the file has more than {settings.max_documents_per_job} requests "
                    "(DOCBATCH_MAX_DOCUMENTS_PER_JOB)",
                )
        digest.update(raw)
        pending.append(raw)
        pending_size += len(raw)
        if pending_size >= blobs.BLOCK:
            block = b"".join(pending)
            blobs.write(session, oid, offset, block)
            offset += len(block)
            pending, pending_size = [], 0
    if pending:
        block = b"".join(pending)
        blobs.write(session, oid, offset, block)
        offset += len(block)
    if lines == 0:
        raise BatchApiError(400, "the file holds no requests", code="empty_file", param="file")
    stored = StoredFile(
        tenant=tenant,
        filename=filename,
        purpose="batch",
        bytes=offset,
        lines=lines,
        sha256=digest.hexdigest(),
        blob_oid=oid,
    )
    session.add(stored)
    session.flush()
    return stored


def _check_request_line(raw: bytes, number: int, seen: set[str]) -> dict[str, Any]:
    try:
        req = json.loads(raw)
    except ValueError:
        raise _line_error(
            number, "invalid_json_line", "This line is not parseable as valid JSON."
        ) from None
    if not isinstance(req, dict):
        raise _line_error(number, "invalid_request", "must be a JSON object")
    for key in ("custom_id", "method", "url", "body"):
        if key not in req:
            raise _line_error(
                number, "missing_required_parameter", f"missing required parameter '{key}'"
            )
    cid = req["custom_id"]
    if not isinstance(cid, str) or not cid.strip() or len(cid) > 512:
        raise _line_error(
            number, "invalid_custom_id", "custom_id must be a non-empty string of ≤ 512 characters"
        )
    if cid in seen:
        raise _line_error(
            number,
            "duplicate_custom_id",
            f"The custom_id for this request ({cid!r}) is a duplicate of another request.",
        )
    seen.add(cid)
    if req["method"] != "POST":
        raise _line_error(number, "invalid_method", "method must be 'POST'")
    if not isinstance(req["url"], str) or not isinstance(req["body"], dict):
        raise _line_error(number, "invalid_request", "url must be a string and body an object")
    return req


def owned_file(session: Session, tenant: str, file_id: str) -> StoredFile:
    found = session.get(StoredFile, file_id)
    if found is None or found.tenant != tenant:
        raise NotFound(f"No such File object: {file_id}")
    return found


def iter_lines(oid: int) -> Iterator[bytes]:
    """The blob's lines (with their newlines), read block by block."""
    rest = b""
    for block in blobs.read(oid):
        rest += block
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if rest:
        yield rest


def delete_file(session: Session, tenant: str, file_id: str) -> None:
    found = owned_file(session, tenant, file_id)
    if found.blob_oid is not None:
        blobs.delete(session, found.blob_oid)
    session.delete(found)


def file_object(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": int(f.bytes),
        "created_at": _unix(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


# -- batches -------------------------------------------------------------------------


@dataclass
class LineError:
    code: str
    message: str
    param: str | None = None


@dataclass
class Converted:
    """One request line as the job sees it: its texts and the task's params."""

    texts: list[str]
    params: dict[str, Any]
    model: str | None
    encoding: str = "float"


def resolve_model(name: Any, task: str, settings: Settings) -> str | None:
    """The task a model name is served by, through DOCBATCH_OPENAI_MODELS and the
    configured model ids (full id or last path part)."""
    if not isinstance(name, str):
        return None
    if settings.openai_models.get(name) == task:
        return task
    configured = settings.model_for(task).model if task in settings.models else ""
    configured = configured or DEFAULT_MODELS.get(task, "")
    names = {configured, configured.rstrip("/").rsplit("/", 1)[-1]} - {""}
    return task if name in names else None


def convert_line(req: dict[str, Any], task: str, settings: Settings) -> Converted | LineError:
    body: dict[str, Any] = req["body"]
    if task == "embed":
        return _convert_embeddings(body, settings)
    if task == "generate":
        if task not in settings.models:
            return LineError(
                "endpoint_unavailable",
                f"{req['url']} is served by the 'generate' task, which this deployment does "
                "not run; use /v1/embeddings or /v1/docbatch/<task>",
            )
        return _convert_generation(req["url"], body, settings)
    model = body.get("model")
    if model is not None and resolve_model(model, task, settings) is None:
        return _unknown_model(model, task)
    text = body.get("text")
    if not isinstance(text, str):
        return LineError("missing_required_parameter", "body.text must be a string", "text")
    raw = {k: v for k, v in body.items() if k not in ("text", "model")}
    params = _task_params(json.dumps([task, raw], sort_keys=True), settings)
    if isinstance(params, LineError):
        return params
    return Converted([text], params, model)


_PARAMS_CACHE: dict[tuple[str, int], dict[str, Any] | LineError] = {}


def _task_params(key: str, settings: Settings) -> dict[str, Any] | LineError:
    """A task's checked params; the lines of a batch mostly repeat one set, checked once."""
    cache_key = (key, id(settings))
    got = _PARAMS_CACHE.get(cache_key)
    if got is None:
        task, raw = json.loads(key)
        try:
            [got] = jobs.parse_tasks([{**raw, "type": task}], settings)
        except InputError as exc:
            field = exc.field.removeprefix("tasks[0].")
            got = LineError("invalid_parameter", exc.message, field)
        if len(_PARAMS_CACHE) > 256:
            _PARAMS_CACHE.clear()
        _PARAMS_CACHE[cache_key] = got
    return dict(got) if isinstance(got, dict) else got


def _unknown_model(model: Any, task: str) -> LineError:
    return LineError(
        "model_not_found",
        f"The model {model!r} does not exist here. Map it to the {task!r} task with "
        f"DOCBATCH_OPENAI_MODELS, or use the configured model's name.",
        "model",
    )


# Request parameters that change nothing here, and those we cannot honour.
_IGNORED = {"user", "store", "metadata", "stream", "service_tier", "parallel_tool_calls"}
_SAMPLING = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n"}


def _convert_generation(
    url: str, body: dict[str, Any], settings: Settings
) -> Converted | LineError:
    """A chat or text completion request as a ``generate`` document: the messages (JSON)
    or the prompt is the text; the sampling parameters are the task's params."""
    chat = url == "/v1/chat/completions"
    model = body.get("model")
    if resolve_model(model, "generate", settings) is None:
        return _unknown_model(model, "generate")
    source = "messages" if chat else "prompt"
    unknown = sorted(set(body) - _IGNORED - _SAMPLING - {"model", source})
    if unknown:
        return LineError(
            "invalid_parameter", f"parameter {unknown[0]!r} is not supported", unknown[0]
        )
    if body.get("stream"):
        return LineError("invalid_parameter", "stream is not supported in a batch", "stream")
    if body.get("n", 1) != 1:
        return LineError("invalid_parameter", "n must be 1", "n")
    raw = body.get(source)
    if chat:
        ok = (
            isinstance(raw, list)
            and raw
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in raw)
        )
        text = json.dumps(raw, ensure_ascii=False) if ok else None
    else:
        text = raw if isinstance(raw, str) and raw else None
    if text is None:
        what = "a non-empty list of {role, content} messages" if chat else "a non-empty string"
        return LineError("invalid_parameter", f"{source} must be {what}", source)
    params: dict[str, Any] = {"input": source}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    # OpenAI's default is sampling at temperature 1; 0 is greedy.
    params["temperature"] = body.get("temperature", 1.0)
    for key in ("top_p", "seed"):
        if body.get(key) is not None:
            params[key] = body[key]
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else stop
    checked = _task_params(json.dumps(["generate", params], sort_keys=True), settings)
    if isinstance(checked, LineError):
        return checked
    return Converted([text], checked, model)


def _convert_embeddings(body: dict[str, Any], settings: Settings) -> Converted | LineError:
    model = body.get("model")
    if resolve_model(model, "embed", settings) is None:
        return _unknown_model(model, "embed")
    unknown = sorted(set(body) - {"input", "model", "encoding_format", "user", "dimensions"})
    if unknown:
        return LineError("invalid_parameter", f"unknown parameter {unknown[0]!r}", unknown[0])
    if body.get("dimensions") is not None:
        return LineError(
            "invalid_parameter", "dimensions is not supported by this model", "dimensions"
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return LineError(
            "invalid_parameter", "encoding_format must be 'float' or 'base64'", "encoding_format"
        )
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return LineError(
            "invalid_parameter",
            "input must be a string or a non-empty list of strings (token arrays are not "
            "supported)",
            "input",
        )
    return Converted(texts, {"type": "embed"}, model, encoding)


class _Lines:
    """The documents of a batch's job, converted from the input file as the job reads them."""

    def __init__(self, oid: int, endpoint: str, task: str, settings: Settings) -> None:
        self.oid, self.endpoint, self.task, self.settings = oid, endpoint, task, settings
        self.params: dict[str, Any] | None = None
        self.model: str | None = None
        self.line_errors: list[dict[str, Any]] = []
        self.url_errors: list[dict[str, Any]] = []
        self.total = 0
        self.multi_input = False

    def requests(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, raw in enumerate(iter_lines(self.oid), start=1):
            if raw.strip():
                yield number, json.loads(raw)

    def first_params(self) -> None:
        """Find the params of the first line that converts: every line must match them."""
        for _, req in self.requests():
            if req["url"] != self.endpoint:
                continue
            got = convert_line(req, self.task, self.settings)
            if isinstance(got, Converted):
                self.params, self.model = got.params, got.model
                return

    def documents(self) -> Iterator[tuple[DocumentIn, int | None]]:
        seen: set[str] = set()
        for number, req in self.requests():
            self.total += 1
            cid = req["custom_id"]
            if req["url"] != self.endpoint:
                if len(self.url_errors) < 100:
                    self.url_errors.append(
                        {
                            "code": "url_mismatch",
                            "line": number,
                            "param": "url",
                            "message": f"The url {req['url']!r} does not match the batch's "
                            f"endpoint {self.endpoint!r}.",
                        }
                    )
                continue
            got = convert_line(req, self.task, self.settings)
            if isinstance(got, Converted) and got.params != self.params:
                got = LineError(
                    "param_mismatch",
                    f"every request of a batch must use the same parameters and model as the "
                    f"first one ({self.params}); this one has {got.params}",
                )
            if isinstance(got, Converted) and got.model != self.model:
                got = LineError(
                    "model_mismatch",
                    f"each input file can only include requests to a single model "
                    f"({self.model!r}); this one asks for {got.model!r}",
                    "model",
                )
            docs: list[DocumentIn] = []
            if isinstance(got, Converted):
                many = len(got.texts) > 1
                self.multi_input |= many
                for i, text in enumerate(got.texts):
                    doc_cid = f"{cid}[{i}]" if many else cid
                    doc = {
                        "custom_id": doc_cid,
                        "text": text,
                        "metadata": {"openai": [number, cid, i, len(got.texts), got.encoding]},
                    }
                    try:
                        # The checked document itself goes to create_job (checked once).
                        checked = validate_document(doc, self.settings)
                    except InputError as exc:
                        field = exc.field.removeprefix("documents[0].")
                        got = LineError("invalid_parameter", exc.message, field)
                        break
                    if doc_cid in seen:
                        got = LineError("duplicate_custom_id", f"duplicate custom_id {doc_cid!r}")
                        break
                    docs.append(checked)
            if isinstance(got, LineError):
                self.line_errors.append(
                    {"line": number, "custom_id": cid, "code": got.code, "message": got.message}
                    | ({"param": got.param} if got.param else {})
                )
                continue
            for checked in docs:
                seen.add(checked.custom_id)
                yield checked, None


def create_batch(
    session: Session, settings: Settings, *, tenant: str, body: dict[str, Any]
) -> tuple[Batch, jobs.NewJob | None]:
    """Check the create request and build the batch's job; the caller publishes units."""
    endpoint = body.get("endpoint")
    task = endpoint_task(endpoint, settings) if isinstance(endpoint, str) else None
    if task is None or not isinstance(endpoint, str):
        raise BatchApiError(
            400,
            f"endpoint {endpoint!r} is not supported; supported: "
            + ", ".join(supported_endpoints(settings)),
            param="endpoint",
        )
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise BatchApiError(
            400,
            f"completion_window {window!r} is not supported; use '24h'",
            param="completion_window",
        )
    metadata = _check_metadata(body.get("metadata"))
    unknown = sorted(
        set(body)
        - {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
    )
    if unknown:
        raise BatchApiError(400, f"Unrecognized request argument: {unknown[0]}", param=unknown[0])
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str):
        raise BatchApiError(400, "input_file_id is required", param="input_file_id")
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
    lines = _Lines(source.blob_oid, endpoint, task, settings)
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


def _check_metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_METADATA_PAIRS:
        raise BatchApiError(
            400,
            f"metadata must be an object of at most {MAX_METADATA_PAIRS} pairs",
            param="metadata",
        )
    for k, v in raw.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise BatchApiError(
                400,
                "metadata keys are at most 64 characters and values strings of at most 512",
                param=f"metadata.{k[:64]}",
            )
    return dict(raw)


def owned_batch(session: Session, tenant: str, batch_id: str) -> Batch:
    found = session.get(Batch, batch_id)
    if found is None or found.tenant != tenant:
        raise NotFound(f"No such Batch object: {batch_id}")
    return found


@dataclass
class Counts:
    total: int
    completed: int
    failed: int
    pending: int


def request_counts(session: Session, batch: Batch) -> Counts:
    errors = len(batch.line_errors or [])
    if batch.job_id is None:
        return Counts(batch.total, 0, batch.total if batch.errors is None else 0, 0)
    if not batch.multi_input:
        row = session.get(JobTask, (batch.job_id, batch.task))
        assert row is not None
        done = row.succeeded
        failed = row.failed + row.cancelled + errors
        return Counts(batch.total, done, failed, batch.total - done - failed)
    done = failed = 0
    for states in _line_states(session, batch):
        if None in states:
            continue
        if all(s == "succeeded" for s in states):
            done += 1
        else:
            failed += 1
    failed += errors
    return Counts(batch.total, done, failed, batch.total - done - failed)


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
        for block in _blocks(render_lines(batch, errors=errors)):
            blobs.write(session, oid, offset, block)
            offset += len(block)
        f.blob_oid, f.bytes = oid, offset
    batch.finalized_at = utcnow()


def _blocks(lines: Iterable[bytes]) -> Iterator[bytes]:
    buf: list[bytes] = []
    size = 0
    for line in lines:
        buf.append(line)
        size += len(line)
        if size >= blobs.BLOCK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def batch_object(session: Session, batch: Batch) -> dict[str, Any]:
    job = session.get(Job, batch.job_id) if batch.job_id else None
    status = status_of(session, batch, job)
    counts = request_counts(session, batch)
    ended = job.finished_at if job is not None else batch.created_at
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": batch.output_file_id if status != "failed" else None,
        "error_file_id": batch.error_file_id if counts.failed and status != "failed" else None,
        "created_at": _unix(batch.created_at),
        "in_progress_at": _unix(batch.created_at) if not batch.errors else None,
        "expires_at": _unix(batch.expires_at),
        "finalizing_at": _unix(ended) if status in ("finalizing", "completed") else None,
        "completed_at": _unix(batch.finalized_at) if status == "completed" else None,
        "failed_at": _unix(batch.created_at) if status == "failed" else None,
        "expired_at": _unix(batch.expired_at) if status == "expired" else None,
        "cancelling_at": _unix(batch.cancelling_at) if batch.cancelling_at else None,
        "cancelled_at": _unix(ended) if status == "cancelled" else None,
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "metadata": batch.meta,
        "usage": None,
        # docbatch's own: the job this batch runs as (GET /v1/jobs/{id} for live counts).
        "docbatch_job_id": batch.job_id,
    }


def _unix(when: dt.datetime | None) -> int | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


# -- output and error lines ------------------------------------------------------------


def render_lines(batch: Batch, *, errors: bool, page_size: int = 2000) -> Iterator[bytes]:
    """The output file (succeeded requests) or the error file (the rest) as JSONL bytes.

    Requests still running are in neither yet: the files grow until the batch ends.
    """
    if errors:
        for e in batch.line_errors or []:
            yield _line(
                batch,
                e["line"],
                e["custom_id"],
                400,
                {
                    "error": {
                        "message": e["message"],
                        "type": "invalid_request_error",
                        "param": e.get("param"),
                        "code": e["code"],
                    }
                },
            )
    if batch.job_id is None:
        return
    cancelled_code = "batch_expired" if batch.expired_at is not None else "batch_cancelled"
    for number, cid, entries in _grouped(batch, page_size):
        statuses = {r.status if r is not None else None for _, r in entries}
        if None in statuses:
            continue
        if statuses == {"succeeded"}:
            if not errors:
                yield _line(batch, number, cid, 200, _body(batch, entries))
            continue
        if not errors:
            continue
        failed = next((r for _, r in entries if r.status == "failed"), None)
        if failed is not None:
            error = {"code": "processing_failed", "message": failed.error or "failed"}
        else:
            error = {
                "code": cancelled_code,
                "message": "This request could not be executed before the batch was "
                + ("expired." if cancelled_code == "batch_expired" else "cancelled."),
            }
        yield _json_line(
            {
                "id": f"batch_req_{batch.id[6:]}_{number}",
                "custom_id": cid,
                "response": None,
                "error": error,
            }
        )


def _line(batch: Batch, number: int, cid: str, status: int, body: dict[str, Any]) -> bytes:
    return _json_line(
        {
            "id": f"batch_req_{batch.id[6:]}_{number}",
            "custom_id": cid,
            "response": {
                "status_code": status,
                "request_id": f"req_{batch.id[6:]}_{number}",
                "body": body,
            },
            "error": None,
        }
    )


def _json_line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _grouped(
    batch: Batch, page_size: int
) -> Iterator[tuple[int, str, list[tuple[list[Any], Any]]]]:
    """(line, custom_id, [(openai metadata, result row or None), ...]) per request line."""
    current: tuple[int, str] | None = None
    entries: list[tuple[list[Any], Any]] = []
    after = -1
    while True:
        with new_session() as s:
            docs = s.execute(
                select(Document.id, Document.seq, Document.meta)
                .where(Document.job_id == batch.job_id, Document.seq > after)
                .order_by(Document.seq)
                .limit(page_size)
            ).all()
            if not docs:
                break
            found = {
                r.document_id: r
                for r in s.execute(
                    select(
                        Result.document_id,
                        Result.status,
                        Result.output,
                        Result.vectors,
                        Result.error,
                        Result.model_id,
                        Result.created_at,
                    ).where(Result.document_id.in_([d.id for d in docs]), Result.task == batch.task)
                )
            }
        for d in docs:
            meta = d.meta["openai"]
            key = (meta[0], meta[1])
            if key != current and current is not None:
                yield current[0], current[1], entries
                entries = []
            current = key
            entries.append((meta, found.get(d.id)))
        after = docs[-1].seq
    if current is not None:
        yield current[0], current[1], entries


def _body(batch: Batch, entries: list[tuple[list[Any], Any]]) -> dict[str, Any]:
    if batch.task == "embed":
        data = []
        tokens = 0
        for meta, r in entries:
            dim = int((r.output or {}).get("dim", 1))
            vec = np.frombuffer(r.vectors, dtype="<f4")[:dim]
            embedding: Any = (
                base64.b64encode(vec.tobytes()).decode()
                if meta[4] == "base64"
                else [float(x) for x in vec]
            )
            data.append({"object": "embedding", "index": meta[2], "embedding": embedding})
            tokens += sum(c[2] for c in (r.output or {}).get("chunks", []))
        return {
            "object": "list",
            "data": data,
            "model": batch.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    [(meta, r)] = entries
    if batch.task == "generate":
        return _completion_body(batch, meta, r)
    return {
        "object": f"docbatch.{batch.task}",
        "model": r.model_id,
        "output": r.output,
    }


def _completion_body(batch: Batch, meta: list[Any], r: Any) -> dict[str, Any]:
    """OpenAI's chat.completion / text_completion body from a generate result."""
    out = r.output or {}
    usage = dict(out.get("usage") or {})
    usage.setdefault(
        "total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    )
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": out.get("finish_reason", "stop"),
        "logprobs": None,
    }
    chat = batch.endpoint == "/v1/chat/completions"
    if chat:
        choice["message"] = {"role": "assistant", "content": out.get("text", "")}
    else:
        choice["text"] = out.get("text", "")
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{batch.id[6:]}-{meta[0]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": _unix(r.created_at),
        "model": batch.model,
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": None,
    }
