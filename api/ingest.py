"""Reading a job submission: a JSON body or an NDJSON body of documents.

The body is spooled to a temporary file while it arrives (bounded by
DOCBATCH_MAX_REQUEST_BYTES and hashed for Idempotency-Key), then parsed as a
stream inside the one transaction that writes the job: an NDJSON upload of a
million documents is never held in memory whole.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from schema import netguard
from schema.errors import InputError, PayloadTooLarge
from schema.jobs import parse_tasks
from schema.settings import Settings

SPOOL_MEMORY = 8 * 1024 * 1024
JOB_FIELDS = {"tasks", "documents", "name", "priority", "webhook_url", "reuse_results"}
NDJSON_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/ndjson",
    "application/json-lines",
    "text/plain",
)


@dataclass
class Submission:
    tasks: list[dict[str, Any]]
    documents: Iterator[tuple[dict, int | None]]
    name: str | None = None
    priority: int = 0
    webhook_url: str | None = None
    reuse_results: bool = False


async def spool_body(chunks: AsyncIterator[bytes], limit: int) -> tuple[IO[bytes], str]:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            spool.close()
            raise PayloadTooLarge(
                "body", f"request body is over {limit} bytes (DOCBATCH_MAX_REQUEST_BYTES)"
            )
        digest.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    return spool, digest.hexdigest()


def request_digest(body_digest: str, content_type: str, query: dict[str, str]) -> str:
    """What Idempotency-Key compares: the body, its kind and the job options with it."""
    kind = "ndjson" if is_ndjson(content_type) else "json"
    canonical = json.dumps([body_digest, kind, sorted(query.items())])
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_multipart(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


async def spool_multipart(
    headers: Any, chunks: AsyncIterator[bytes], limit: int
) -> tuple[IO[bytes], str, dict[str, str]]:
    """A multipart/form-data upload: the NDJSON file in field ``file`` (spooled to disk past
    1 MB by Starlette's parser) and the job options as text fields (tasks, name, ...)."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def limited() -> AsyncGenerator[bytes, None]:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    "body", f"request body is over {limit} bytes (DOCBATCH_MAX_REQUEST_BYTES)"
                )
            yield chunk

    parser = MultiPartParser(headers, limited(), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InputError("body", f"malformed multipart/form-data: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InputError("file", "a multipart upload needs the NDJSON documents in field 'file'")
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    unknown = sorted(set(fields) - {"tasks", "name", "priority", "webhook_url"})
    if unknown:
        raise InputError(unknown[0], "unknown field; expected tasks, name, priority, webhook_url")
    spool = upload.file
    digest = hashlib.sha256()
    spool.seek(0)
    while block := spool.read(1 << 20):
        digest.update(block)
    spool.seek(0)
    return spool, digest.hexdigest(), fields


def is_ndjson(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in NDJSON_TYPES


def _int_field(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(name, f"must be an integer from {lo} to {hi}") from None
    if not lo <= number <= hi or isinstance(value, bool):
        raise InputError(name, f"must be an integer from {lo} to {hi}, got {value!r}")
    return number


def _bool_field(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise InputError(name, f"must be true or false, got {value!r}")


def _str_field(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InputError(name, f"must be a string of at most {limit} characters")
    if "\x00" in value or not _encodes(value):
        raise InputError(name, "contains a NUL character or invalid UTF-8")
    return value


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _webhook_field(value: Any, settings: Settings) -> str | None:
    url = _str_field(value, "webhook_url", 2048)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("webhook_url", f"must be an http:// or https:// URL, got {url!r}")
    try:
        netguard.resolve_webhook(url, settings.webhook_allow_networks)
    except netguard.UnsafeDestination as exc:
        raise InputError("webhook_url", str(exc)) from None
    return url


def parse_json_body(spool: IO[bytes], settings: Settings) -> Submission:
    try:
        body = json.load(spool)
    except UnicodeDecodeError as exc:
        raise InputError("body", f"is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    except ValueError as exc:
        raise InputError("body", f"is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InputError("body", "must be a JSON object with tasks and documents")
    unknown = sorted(set(body) - JOB_FIELDS)
    if unknown:
        raise InputError(unknown[0], f"unknown field; expected {sorted(JOB_FIELDS)}")
    tasks = parse_tasks(body.get("tasks"), settings)
    docs = body.get("documents")
    if not isinstance(docs, list):
        raise InputError("documents", "must be a list of {custom_id, text, metadata?}")
    if not docs:
        raise InputError("documents", "is empty; submit at least one document")
    if len(docs) > settings.max_documents_per_job:
        raise InputError(
            "documents",
            f"{len(docs)} documents; the limit is {settings.max_documents_per_job} "
            "(DOCBATCH_MAX_DOCUMENTS_PER_JOB)",
        )
    return Submission(
        tasks=tasks,
        documents=((d, None) for d in docs),
        name=_str_field(body.get("name"), "name", 200),
        priority=_int_field(body.get("priority", 0), "priority", 0, 9),
        webhook_url=_webhook_field(body.get("webhook_url"), settings),
        reuse_results=_bool_field(body.get("reuse_results", False), "reuse_results"),
    )


def parse_tasks_param(raw: str | None, settings: Settings) -> list[dict[str, Any]]:
    """``?tasks=tags,summarize`` or ``?tasks=[{"type":"translate","target_lang":"de"}]``."""
    if not raw:
        raise InputError(
            "tasks", "query parameter is required with an NDJSON body, e.g. ?tasks=tags,summarize"
        )
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InputError("tasks", f"is not valid JSON: {exc}") from None
    else:
        value = [name.strip() for name in raw.split(",") if name.strip()]
    return parse_tasks(value, settings)


def iter_ndjson(spool: IO[bytes]) -> Iterator[tuple[dict, int | None]]:
    for number, raw in enumerate(spool, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("document", f"is not valid UTF-8: {exc.reason}", line=number) from None
        if not line.strip():
            continue
        try:
            yield json.loads(line), number
        except ValueError as exc:
            raise InputError("document", f"malformed JSON: {exc}", line=number) from None


def parse_ndjson_body(spool: IO[bytes], query: dict[str, str], settings: Settings) -> Submission:
    return Submission(
        tasks=parse_tasks_param(query.get("tasks"), settings),
        documents=iter_ndjson(spool),
        name=_str_field(query.get("name"), "name", 200),
        priority=_int_field(query.get("priority", 0), "priority", 0, 9),
        webhook_url=_webhook_field(query.get("webhook_url"), settings),
        reuse_results=_bool_field(query.get("reuse_results", "false"), "reuse_results"),
    )
