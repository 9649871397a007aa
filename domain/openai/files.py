"""Batch input files: an upload checked line by line as it is stored in a blob, the
tenant's files, their lines read back."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain import blobs
from docbatch.schema.errors import BatchApiError, NotFound
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Batch, Job, JobStatus, StoredFile, utcnow
from docbatch.schema.text_checks import depth_message, json_problem, too_deep


def _line_error(number: int, code: str, message: str) -> BatchApiError:
    return BatchApiError(400, f"line {number}: {message}", code=code, param="file", line=number)


def line_limit(settings: Settings) -> int:
    """The longest request line a file may hold, in bytes: the biggest document's text
    JSON-escaped, plus the request around it."""
    return settings.max_document_bytes * 2 + 4096


def _bounded_lines(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """The stream's lines, each read to at most ``limit + 1`` bytes: a longer line is
    refused from its first ``limit + 1`` bytes, never held whole."""
    while raw := stream.readline(limit + 1):
        yield raw


def store_upload(
    session: Session,
    settings: Settings,
    *,
    tenant: str,
    filename: str,
    purpose: str,
    stream: IO[bytes],
    expires_after_seconds: int | None = None,
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
    limit = line_limit(settings)
    for number, raw in enumerate(_bounded_lines(stream, limit), start=1):
        if len(raw) > limit:  # only its first limit + 1 bytes were read
            raise _line_error(
                number,
                "line_too_long",
                f"is over {limit} bytes; a request line may hold at most "
                f"{settings.max_document_bytes} bytes of text (DOCBATCH_MAX_DOCUMENT_BYTES)",
            )
        if raw.strip():
            _check_request_line(raw, number, seen, settings)
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
    if expires_after_seconds is not None:  # OpenAI's expires_after, anchored at creation
        stored.created_at = utcnow()
        stored.expires_at = stored.created_at + dt.timedelta(seconds=expires_after_seconds)
    session.add(stored)
    session.flush()
    return stored


EXPIRES_MIN, EXPIRES_MAX = 3600, 2_592_000  # OpenAI's bounds: one hour to 30 days


def expires_after(anchor: object, seconds: object) -> int | None:
    """The seconds of an ``expires_after`` given as form fields (``expires_after[anchor]``,
    ``expires_after[seconds]``, as the openai client sends them); None when absent."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise BatchApiError(
            400, "expires_after[anchor] must be 'created_at'", param="expires_after[anchor]"
        )
    text = str(seconds) if seconds is not None else ""
    if not text.isdigit() or not EXPIRES_MIN <= int(text) <= EXPIRES_MAX:
        raise BatchApiError(
            400,
            f"expires_after[seconds] must be an integer from {EXPIRES_MIN} (1 hour) to "
            f"{EXPIRES_MAX} (30 days)",
            param="expires_after[seconds]",
        )
    return int(text)


def in_use_by(session: Session, file_id: str) -> Batch | None:
    """A batch still running whose input, output or error file this is."""
    return session.scalar(
        select(Batch)
        .join(Job, Job.id == Batch.job_id)
        .where(
            Batch.finalized_at.is_(None),
            Job.status.not_in([s.value for s in JobStatus if s.terminal]),
            (Batch.input_file_id == file_id)
            | (Batch.output_file_id == file_id)
            | (Batch.error_file_id == file_id),
        )
        .limit(1)
    )


def _check_request_line(
    raw: bytes, number: int, seen: set[str], settings: Settings
) -> dict[str, Any]:
    try:
        req = json.loads(raw)
    except RecursionError:
        raise _line_error(
            number, "invalid_json_line", depth_message(settings.max_json_depth)
        ) from None
    except ValueError:
        raise _line_error(
            number, "invalid_json_line", "This line is not parseable as valid JSON."
        ) from None
    if not isinstance(req, dict):
        raise _line_error(number, "invalid_request", "must be a JSON object")
    # What would break a batch later (a custom_id that cannot be sent back as UTF-8, a
    # body nested past the cap) is refused now. A lone surrogate can only come from a
    # \u escape or a surrogate's bytes, NaN and Infinity only as those words: the full walk
    # runs only for a line holding one of them.
    suspect = b"\\u" in raw or b"\xed" in raw or b"NaN" in raw or b"Infinity" in raw
    depth = settings.max_json_depth
    if suspect:
        problem = json_problem(req, depth)
    elif raw.count(b"{") + raw.count(b"[") > depth:  # else it cannot nest deeper
        problem = depth_message(depth) if too_deep(req, depth) else None
    else:
        problem = None
    if problem:
        raise _line_error(number, "invalid_request", f"the request {problem}")
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


def iter_lines(oid: int, settings: Settings) -> Iterator[bytes]:
    """The blob's lines (with their newlines), read block by block."""
    rest = b""
    for block in blobs.read(oid, settings):
        rest += block
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if rest:
        yield rest


def delete_file(session: Session, tenant: str, file_id: str) -> None:
    """Delete the file and its bytes; a file a running batch reads or writes is a 409
    naming the batch."""
    found = owned_file(session, tenant, file_id)
    batch = in_use_by(session, file_id)
    if batch is not None:
        raise BatchApiError(
            409,
            f"file {file_id} is in use by batch {batch.id}, which is still running; "
            "cancel the batch or wait for it to end",
            code="file_in_use",
            param="file_id",
        )
    if found.blob_oid is not None:
        blobs.delete(session, found.blob_oid)
    session.delete(found)
