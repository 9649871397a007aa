"""OpenAI's shapes: the File and Batch objects, and the output and error files' lines
rendered from a batch's results (live while it runs, once into blobs when it ends)."""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select

from docbatch.domain import blobs
from docbatch.domain.openai.responses import response_body
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Batch, Document, Job, Result, StoredFile, Unit

ENDED = frozenset({"completed", "cancelled", "expired"})


@dataclass
class Counts:
    """A batch's ``request_counts`` (and the requests still running)."""

    total: int
    completed: int
    failed: int
    pending: int


def unix(when: dt.datetime | None) -> int | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def file_object(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": int(f.bytes),
        "created_at": unix(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": unix(f.expires_at) if f.expires_at is not None else None,
        "status_details": None,
    }


def batch_object(
    batch: Batch, job: Job | None, status: str, counts: Counts, *, partial_files: bool = False
) -> dict[str, Any]:
    """OpenAI's Batch object for ``batch`` (its job, status and request counts read)."""
    ended = job.finished_at if job is not None else batch.created_at
    # OpenAI sets the file ids when the batch has ended (scripts poll on them).
    files = status in ENDED or (partial_files and status != "failed")
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": batch.output_file_id if files else None,
        "error_file_id": batch.error_file_id if files and counts.failed else None,
        "created_at": unix(batch.created_at),
        "in_progress_at": unix(batch.created_at) if not batch.errors else None,
        "expires_at": unix(batch.expires_at),
        "finalizing_at": unix(ended) if status in ("finalizing", "completed") else None,
        "completed_at": unix(batch.finalized_at) if status == "completed" else None,
        "failed_at": unix(batch.created_at) if status == "failed" else None,
        "expired_at": unix(batch.expired_at) if status == "expired" else None,
        "cancelling_at": unix(batch.cancelling_at) if batch.cancelling_at else None,
        "cancelled_at": unix(ended) if status == "cancelled" else None,
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "metadata": batch.meta,
        "usage": batch.usage,
        # docbatch's own: the job this batch runs as (GET /v1/jobs/{id} for live counts).
        "docbatch_job_id": batch.job_id,
    }


def blocks(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines joined into blocks of about blobs.BLOCK bytes."""
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


# -- output and error lines ------------------------------------------------------------


def render_lines(
    settings: Settings, batch: Batch, *, errors: bool, page_size: int = 2000
) -> Iterator[bytes]:
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
    for number, cid, entries in _grouped(settings, batch, page_size):
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
    settings: Settings, batch: Batch, page_size: int
) -> Iterator[tuple[int, str, list[tuple[list[Any], Any]]]]:
    """(line, custom_id, [(openai metadata, result row or None), ...]) per request line,
    in the input file's order. The job's documents are grouped by model (each model's
    lines in file order, docbatch.domain.openai.convert.RequestLines): one reader per
    model, merged by line number."""
    with new_session(settings) as s:
        ranges = s.execute(
            select(Unit.task, func.min(Unit.seq_lo), func.max(Unit.seq_hi))
            .where(Unit.job_id == batch.job_id)
            .group_by(Unit.task)
        ).all()
    readers = [_grouped_range(settings, batch, t, lo, hi, page_size) for t, lo, hi in ranges]
    yield from heapq.merge(*readers, key=lambda group: group[0])


def _grouped_range(
    settings: Settings, batch: Batch, task: str, lo: int, hi: int, page_size: int
) -> Iterator[tuple[int, str, list[tuple[list[Any], Any]]]]:
    """``_grouped`` for the documents ``lo..hi`` of one model (job task)."""
    current: tuple[int, str] | None = None
    entries: list[tuple[list[Any], Any]] = []
    after = lo - 1
    while True:
        with new_session(settings) as s:
            docs = s.execute(
                select(Document.id, Document.seq, Document.meta)
                .where(Document.job_id == batch.job_id, Document.seq > after)
                .where(Document.seq <= hi)
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
                        Result.task,
                        Result.status,
                        Result.output,
                        Result.vectors,
                        Result.error,
                        Result.model_id,
                        Result.params,
                        Result.created_at,
                    ).where(Result.document_id.in_([d.id for d in docs]), Result.task == task)
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


def _model(batch: Batch, meta: list[Any]) -> str | None:
    """The model a line named: kept on its documents when not the batch's (first line's)."""
    return str(meta[6]) if len(meta) > 6 else batch.model


def _body(batch: Batch, entries: list[tuple[list[Any], Any]]) -> dict[str, Any]:
    # The endpoint says the shape; the line's model is what it named.
    model = _model(batch, entries[0][0])
    if batch.endpoint == "/v1/embeddings":
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
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    if batch.endpoint == "/v1/moderations":
        return _moderation_body(batch, entries)
    [(meta, r)] = entries
    if batch.endpoint == "/v1/responses":
        rid = f"{batch.id[6:]}_{meta[0]}"
        return response_body(rid, model, unix(r.created_at), r.output or {}, r.params or {})
    if batch.endpoint in ("/v1/chat/completions", "/v1/completions"):
        return _completion_body(batch, meta, r)
    return {
        "object": "docbatch." + batch.endpoint.rsplit("/", 1)[-1],
        "model": r.model_id,
        "output": r.output,
    }


def _moderation_body(batch: Batch, entries: list[tuple[list[Any], Any]]) -> dict[str, Any]:
    """OpenAI's moderation body: per input, the classify head's score of every label as
    ``category_scores``, ``categories`` those at or above the threshold, ``flagged`` any."""
    results = []
    for meta, r in sorted(entries, key=lambda e: e[0][2]):
        threshold = float(meta[5]) if len(meta) > 5 and meta[5] is not None else 0.5
        scores = {s["label"]: float(s["score"]) for s in (r.output or {}).get("scores", [])}
        categories = {label: score >= threshold for label, score in scores.items()}
        results.append(
            {
                "flagged": any(categories.values()),
                "categories": categories,
                "category_scores": scores,
            }
        )
    return {
        "id": f"modr-{batch.id[6:]}-{entries[0][0][0]}",
        "model": _model(batch, entries[0][0]) or entries[0][1].task,
        "results": results,
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
        "created": unix(r.created_at),
        "model": _model(batch, meta),
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": None,
    }
