"""A job's results as a Parquet file (``GET /v1/jobs/{id}/results?format=parquet``).

One row per document in submission order: ``job_id``, ``custom_id``, ``metadata`` (JSON
text), a file's ``sha256`` and ``parent``, ``created_at``; then per task its common
columns (``<task>_status``, ``_output`` as JSON text, ``_error``, ``_model_id``,
``_model_revision``, ``_params``, ``_reused``, ``_created_at``) and its typed ones
(``domain/export_columns.py``: ``tags_tags`` list<struct<label, score>>,
``summarize_summary``, ``entities_entities``, ...). Tasks that store vectors (embed) add
``<task>_vector`` (the document vector) and ``<task>_chunk_vectors`` as fixed-size
float32 lists. Written page by page, so memory holds one page, not the job. Example::

    >>> path = write_parquet(job_id, ["embed"], "/tmp/out.parquet")
    >>> pyarrow.parquet.read_table(path).column("embed_vector").type
    FixedSizeListType(fixed_size_list<element: float>[384])
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import Select, select

from docbatch.domain.export_columns import TYPED, common, document_columns
from docbatch.domain.results import index_scans_only
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Document, DocumentFile, Job, Result

log = logging.getLogger("docbatch.export")


def _vector_dims(job_id: str, tasks: list[str], settings: Settings) -> dict[str, int]:
    dims: dict[str, int] = {}
    with new_session(settings) as s:
        for task in tasks:
            first = s.scalars(
                select(Result)
                .where(Result.job_id == job_id, Result.task == task, Result.vectors.is_not(None))
                .limit(1)
            ).first()
            if first is not None:
                dims[task] = int((first.output or {}).get("dim", 1))
    return dims


def _schema(tasks: list[str], dims: dict[str, int]) -> Any:
    import pyarrow as pa

    fields = [pa.field(name, kind) for name, kind, _ in document_columns()]
    for t in tasks:
        fields += [pa.field(f"{t}_{suffix}", kind) for suffix, kind, _ in common()]
        fields += [pa.field(f"{t}_{c.name}", c.arrow()) for c in TYPED.get(t, [])]
        if t in dims:
            vec = pa.list_(pa.float32(), dims[t])
            fields += [pa.field(f"{t}_vector", vec), pa.field(f"{t}_chunk_vectors", pa.list_(vec))]
    return pa.schema(fields)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def iter_parquet(
    job_id: str, tasks: list[str], page_size: int, settings: Settings
) -> Iterator[bytes]:
    """The Parquet file of ``write_parquet`` as it is written, row group by row group:
    the first bytes leave at once, whatever the job's size (a million-document file takes
    minutes to build, longer than a proxy waits for a first byte). Written on a thread into
    a pipe; a reader that goes away closes the pipe and so stops the writer."""
    read_fd, write_fd = os.pipe()
    failed: list[BaseException] = []
    gone = threading.Event()

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                write_parquet(job_id, tasks, sink, page_size=page_size, settings=settings)
        except BaseException as exc:
            if not gone.is_set():  # else: the reader went away, the pipe broke
                failed.append(exc)
                log.exception("job %s: the Parquet export failed midway", job_id)

    thread = threading.Thread(target=produce, name="docbatch-parquet", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb") as source:
            while block := source.read(1 << 16):
                yield block
    finally:
        gone.set()
    thread.join()
    if failed:  # the response is cut short: the client sees a truncated file
        raise failed[0]


def page_documents(job_id: str, after: int, page_size: int) -> Select[Any]:
    """The job's next ``page_size`` documents after ``seq`` ``after``, with their file's
    hash and parent. The page is cut before the join: joined first, a planner that
    expects a few hundred rows (statistics from before the job) hashes the rest of the
    job's documents with ``document_files`` and sorts them, for every page."""
    page = (
        select(Document.id, Document.seq, Document.custom_id, Document.meta.label("meta"))
        .where(Document.job_id == job_id, Document.seq > after)
        .order_by(Document.seq)
        .limit(page_size)
        .subquery()
    )
    return (
        select(page, DocumentFile.sha256, DocumentFile.parent_document_id)
        .outerjoin(DocumentFile, DocumentFile.document_id == page.c.id)
        .order_by(page.c.seq)
    )


def page_results(document_ids: list[int]) -> Select[Result]:
    """The results of one page's documents, by document id alone (the ids are the job's),
    in a transaction that allows index scans only (``results.index_scans_only``): with a
    ``job_id`` condition too, or a sequential scan, a planner whose statistics predate the
    job (it just ended) walks the job's whole ``(job_id, status)`` index, or the table, for
    every page, quadratic in the job's size (a million-document export ran at a fifth of
    the 100,000 one's rate)."""
    return select(Result).where(Result.document_id.in_(document_ids))


def write_parquet(
    job_id: str,
    tasks: list[str],
    path: str | BinaryIO,
    page_size: int = 1000,
    *,
    settings: Settings,
) -> str | BinaryIO:
    """Write ``job_id``'s results to ``path`` (a file name or a binary file object);
    pending tasks have status ``pending``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dims = _vector_dims(job_id, tasks, settings)
    schema = _schema(tasks, dims)
    with new_session(settings) as s:
        created = _utc(s.scalar(select(Job.created_at).where(Job.id == job_id)))
    after = -1
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        while True:
            with new_session(settings) as s:
                index_scans_only(s, settings)
                docs = s.execute(page_documents(job_id, after, page_size)).all()
                if not docs and after >= 0:
                    break
                found: dict[tuple[int, str], Result] = {}
                for r in s.scalars(page_results([d.id for d in docs])):
                    found[(r.document_id, r.task)] = r
                parent_ids = {d.parent_document_id for d in docs} - {None}
                parents: dict[int, str] = {}
                if parent_ids:
                    query = select(Document.id, Document.custom_id).where(
                        Document.id.in_(parent_ids)
                    )
                    parents = {row.id: row.custom_id for row in s.execute(query)}
                cols: dict[str, list[Any]] = {f.name: [] for f in schema}
                for d in docs:
                    cols["job_id"].append(job_id)
                    cols["custom_id"].append(d.custom_id)
                    cols["metadata"].append(
                        json.dumps(d.meta, ensure_ascii=False) if d.meta else None
                    )
                    cols["sha256"].append(d.sha256)
                    cols["parent"].append(parents.get(d.parent_document_id))
                    cols["created_at"].append(created)
                    for t in tasks:
                        _add(cols, t, found.get((d.id, t)), dims.get(t))
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            if not docs:
                break
            after = docs[-1].seq
    return path


def _add(cols: dict[str, list[Any]], task: str, r: Result | None, dim: int | None) -> None:
    cols[f"{task}_status"].append(r.status if r is not None else "pending")
    output = r.output if r is not None else None
    cols[f"{task}_output"].append(json.dumps(output, ensure_ascii=False) if output else None)
    cols[f"{task}_error"].append(r.error if r is not None else None)
    cols[f"{task}_model_id"].append(r.model_id if r is not None else None)
    cols[f"{task}_model_revision"].append(r.model_revision if r is not None else None)
    params = r.params if r is not None else None
    cols[f"{task}_params"].append(json.dumps(params, ensure_ascii=False) if params else None)
    cols[f"{task}_reused"].append(bool(r.reused) if r is not None else None)
    cols[f"{task}_created_at"].append(_utc(r.created_at) if r is not None else None)
    for column in TYPED.get(task, []):
        cols[f"{task}_{column.name}"].append(column.read(output) if output else None)
    if dim is None:
        return
    if r is not None and r.vectors is not None:
        vecs = np.frombuffer(r.vectors, dtype="<f4").reshape(-1, dim)
        cols[f"{task}_vector"].append(vecs[0])
        cols[f"{task}_chunk_vectors"].append(list(vecs[1:]))
    else:
        cols[f"{task}_vector"].append(None)
        cols[f"{task}_chunk_vectors"].append(None)
