"""Reading a job submission: a JSON body, an NDJSON body, or a multipart upload of one.

The body is spooled to a temporary file while it arrives (bounded by
DOCBATCH_MAX_REQUEST_BYTES, or DOCBATCH_MAX_JSON_BODY_BYTES for a JSON body, and hashed
for Idempotency-Key; NDJSON lines are length-checked as they arrive), then read inside
the one transaction that writes the job. NDJSON is read one line at a time, so an
upload of a million documents is never held in memory whole; a JSON body is parsed
whole, hence its much smaller cap. What a request may hold is decided by the models in
schema/models.py (see schema/validation.py), not here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from docbatch.api import multipart
from docbatch.domain import netguard
from docbatch.domain.files import (
    TEXT_SUFFIXES,
    FileDocument,
    inline_text,
    is_jsonl_name,
    relative_name,
)
from docbatch.schema.errors import InputError, PayloadTooLarge, UnsupportedMediaType
from docbatch.schema.models import JOB_OPTIONS, JobCreate
from docbatch.schema.settings import Settings
from docbatch.schema.validation import parse_json, task_params, validate_job

SPOOL_MEMORY = 8 * 1024 * 1024
NDJSON_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/ndjson",
    "application/json-lines",
    "text/plain",
)
MULTIPART = "multipart/form-data"


@dataclass
class Submission:
    tasks: list[dict[str, Any]]
    documents: Iterator[tuple[Any, int | None]]
    name: str | None = None
    priority: int = 0
    webhook_url: str | None = None
    reuse_results: bool = False
    retention_days: int | None = None
    keep_originals: bool | None = None


def body_kind(content_type: str) -> str:
    """``json``, ``ndjson`` or ``multipart``; anything else (or none) is a 415."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    if media == MULTIPART:
        return "multipart"
    got = f"got {media!r}" if media else "none was sent"
    raise UnsupportedMediaType(
        "Content-Type",
        f"must be application/json, application/x-ndjson or multipart/form-data ({got})",
    )


def body_limit(kind: str, settings: Settings) -> tuple[int, str]:
    """The byte limit of a body of this kind and the setting that sets it."""
    if kind == "json" and settings.max_json_body_bytes < settings.max_request_bytes:
        return settings.max_json_body_bytes, "DOCBATCH_MAX_JSON_BODY_BYTES"
    return settings.max_request_bytes, "DOCBATCH_MAX_REQUEST_BYTES"


def _too_large(limit: int, setting: str) -> PayloadTooLarge:
    hint = (
        "; send bigger jobs as NDJSON (Content-Type: application/x-ndjson) or a multipart upload"
        if setting == "DOCBATCH_MAX_JSON_BODY_BYTES"
        else ""
    )
    return PayloadTooLarge("body", f"request body is over {limit} bytes ({setting}){hint}")


def check_declared_length(headers: Any, limit: int, setting: str) -> None:
    """Refuse a body whose Content-Length is over the limit before reading any of it."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, setting)


class LineGuard:
    """Counts NDJSON lines as the body arrives and refuses one over DOCBATCH_MAX_LINE_BYTES
    at once, so a 200 MB line is never read whole (nor uploaded whole)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines = 0  # complete lines seen
        self.current = 0  # bytes of the line being read

    def feed(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first == -1:
            self.current += len(chunk)
            self._check(self.current, 1)
            return
        self._check(self.current + first, 1)
        if len(chunk) > self.limit:  # lines inside this chunk could be over the limit too
            start, number = first + 1, 2
            while (end := chunk.find(b"\n", start)) != -1:
                self._check(end - start, number)
                start, number = end + 1, number + 1
        self.lines += chunk.count(b"\n")
        self.current = len(chunk) - chunk.rfind(b"\n") - 1
        self._check(self.current, 1)

    def _check(self, size: int, offset: int) -> None:
        if size > self.limit:
            raise line_too_long(self.limit, self.lines + offset)


def line_too_long(limit: int, line: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "document",
        f"line is over {limit} bytes (DOCBATCH_MAX_LINE_BYTES); put one document per line, "
        "its text at most DOCBATCH_MAX_DOCUMENT_BYTES",
        line=line,
    )


async def spool_body(
    chunks: AsyncIterator[bytes],
    limit: int,
    setting: str = "DOCBATCH_MAX_REQUEST_BYTES",
    line_limit: int | None = None,
) -> tuple[IO[bytes], str]:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
    digest = hashlib.sha256()
    guard = LineGuard(line_limit) if line_limit else None
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, setting)
            if guard is not None:
                guard.feed(chunk)
            digest.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, digest.hexdigest()


def request_digest(body_digest: str, content_type: str, query: dict[str, str]) -> str:
    """What Idempotency-Key compares: the body, its kind and the job options with it."""
    kind = body_kind(content_type)
    canonical = json.dumps([body_digest, kind, sorted(query.items())])
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_multipart(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == MULTIPART


def multipart_fields(spool: IO[bytes], content_type: str) -> tuple[dict[str, str], str]:
    """A spooled multipart body's job options (text fields) and the digest Idempotency-Key
    compares; 422 for an unknown field or no ``file`` part."""
    boundary = multipart.boundary_of(content_type)
    fields, digest, files = multipart.fields_and_digest(spool, boundary)
    unknown = sorted(set(fields) - set(JOB_OPTIONS) - {"file"})
    if unknown:
        raise InputError(unknown[0], f"unknown field; expected file, {', '.join(JOB_OPTIONS)}")
    if "file" in fields:
        raise InputError("file", "must be a file part (-F file=@report.pdf), not a text field")
    if not files:
        raise InputError(
            "file",
            "a multipart upload needs its documents in 'file' parts: NDJSON files of "
            "{custom_id, text}, or files such as PDFs, Word files, web pages, e-mails, archives",
        )
    return fields, digest


def _looks_like_ndjson(part: multipart.Part) -> bool:
    media = part.content_type.split(";")[0].strip().lower()
    if is_jsonl_name(part.filename or "") or (media in NDJSON_TYPES and media != "text/plain"):
        return True
    assert part.data is not None
    head = part.data.read(4096)
    part.data.seek(0)
    first = head.lstrip().split(b"\n", 1)[0]
    if not first.startswith(b"{"):
        return False
    try:
        return isinstance(obj := json.loads(first), dict) and "custom_id" in obj
    except ValueError:
        return False


def _opener(data: IO[bytes]) -> Callable[[], IO[bytes]]:
    return lambda: data


def iter_multipart_documents(
    spool: IO[bytes], content_type: str, settings: Settings
) -> Iterator[tuple[Any, int | None]]:
    """Every document of the upload's ``file`` parts, one part held at a time: an NDJSON
    file's lines, a UTF-8 ``.txt``/``.md`` file as its text, any other file as a
    ``FileDocument`` (its custom_id is its file name, a relative path) for the extract
    stage."""
    for part in multipart.iter_parts(spool, multipart.boundary_of(content_type), keep_files=True):
        if part.data is None:
            continue  # a text field: read in the first pass
        if part.name != "file":
            part.data.close()
            raise InputError(part.name, "unknown file field; documents go in 'file' parts")
        if _looks_like_ndjson(part):
            with part.data:
                yield from iter_ndjson(part.data, settings)
            continue
        name = relative_name(part.filename or "")
        if name.lower().endswith(TEXT_SUFFIXES) and part.size <= settings.max_document_bytes:
            text = inline_text(name, part.data.read(), settings.max_document_bytes)
            part.data.seek(0)
            if text is not None:
                part.data.close()
                yield {"custom_id": name, "text": text}, None
                continue
        yield FileDocument(name, part.size, _opener(part.data)), None


def is_ndjson(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in NDJSON_TYPES


def _submission(
    job: JobCreate, documents: Iterator[tuple[Any, int | None]], settings: Settings
) -> Submission:
    if job.webhook_url is not None:
        # The model checked its form; where it leads is checked here, after DNS (and again
        # at every delivery: domain/netguard.py).
        try:
            netguard.resolve_webhook(job.webhook_url, settings.webhook_allow_networks)
        except netguard.UnsafeDestination as exc:
            raise InputError("webhook_url", str(exc)) from None
    return Submission(
        tasks=task_params(job.tasks),
        documents=documents,
        name=job.name,
        priority=job.priority,
        webhook_url=job.webhook_url,
        reuse_results=job.reuse_results,
        retention_days=job.retention_days,
        keep_originals=job.keep_originals,
    )


def parse_json_body(spool: IO[bytes], settings: Settings) -> Submission:
    # Read whole: its size is bounded by DOCBATCH_MAX_JSON_BODY_BYTES while it was spooled.
    body = parse_json(spool.read(), settings, "body", what="is not valid JSON")
    if not isinstance(body, dict):
        raise InputError("body", "must be a JSON object with tasks and documents")
    docs = body.get("documents")
    if not isinstance(docs, list):
        raise InputError("documents", "is required: a list of {custom_id, text, metadata?}")
    if len(docs) > settings.max_documents_per_job:
        raise InputError(
            "documents",
            f"{len(docs)} documents; the limit is {settings.max_documents_per_job} "
            "(DOCBATCH_MAX_DOCUMENTS_PER_JOB)",
        )
    # The options through JobCreate now; each document through DocumentIn (JobCreate's
    # item type) as create_job reaches it, as for NDJSON lines: validated models of every
    # document at once would double the memory a body takes.
    job = validate_job({**body, "documents": []}, settings)
    return _submission(job, _handed_over(docs), settings)


def _handed_over(docs: list[Any]) -> Iterator[tuple[Any, None]]:
    """Each document once, dropping the list's reference so its memory goes as it is written."""
    for i in range(len(docs)):
        doc, docs[i] = docs[i], None
        yield doc, None


def job_options(query: dict[str, str], settings: Settings) -> dict[str, Any]:
    """The job options of an NDJSON or multipart submission (query parameters or text
    fields) as the JSON values ``JobCreate`` takes: only exact forms convert ("9" is 9,
    " 9 " stays a string and is refused)."""
    options: dict[str, Any] = {k: v for k, v in query.items() if k in JOB_OPTIONS}
    raw_tasks = query.get("tasks")
    if not raw_tasks:
        raise InputError(
            "tasks", "query parameter is required with an NDJSON body, e.g. ?tasks=tags,summarize"
        )
    if raw_tasks.lstrip().startswith("["):
        options["tasks"] = parse_json(
            raw_tasks.encode(), settings, "tasks", what="is not valid JSON"
        )
    else:
        options["tasks"] = [name.strip() for name in raw_tasks.split(",") if name.strip()]
    priority = options.get("priority")
    if (
        isinstance(priority, str)
        and priority.isascii()
        and priority.isdigit()
        and len(priority) < 6
    ):
        options["priority"] = int(priority)
    for name in ("reuse_results", "keep_originals"):
        flag = options.get(name)
        if isinstance(flag, str) and flag.lower() in ("true", "1", "false", "0"):
            options[name] = flag.lower() in ("true", "1")
    days = options.get("retention_days")
    if isinstance(days, str) and days.isascii() and days.isdigit() and len(days) < 6:
        options["retention_days"] = int(days)
    return options


def iter_ndjson(spool: IO[bytes], settings: Settings) -> Iterator[tuple[dict, int | None]]:
    limit = settings.max_line_bytes
    number = 0
    # readline with a bound: an over-long line is refused after reading limit+2 bytes of it.
    while raw := spool.readline(limit + 2):
        number += 1
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if len(line) > limit:
            raise line_too_long(limit, number)
        if not line.strip():
            continue
        yield parse_json(line, settings, "document", line=number, what="malformed JSON"), number


def parse_ndjson_body(spool: IO[bytes], query: dict[str, str], settings: Settings) -> Submission:
    job = validate_job(job_options(query, settings), settings)
    return _submission(job, iter_ndjson(spool, settings), settings)


def parse_multipart_body(
    spool: IO[bytes], content_type: str, options: dict[str, str], settings: Settings
) -> Submission:
    """``options``: the query parameters and the upload's text fields (fields win)."""
    job = validate_job(job_options(options, settings), settings)
    return _submission(job, iter_multipart_documents(spool, content_type, settings), settings)
