"""A job's results as a Parquet file (``GET /v1/jobs/{id}/results?format=parquet``).

One row per document in submission order. Columns: ``custom_id``; per task
``<task>_status``, ``<task>_output`` (the JSON output, as text) and ``<task>_error``;
for tasks that store vectors (embed), ``<task>_vector`` (the document vector) and
``<task>_chunk_vectors`` (one per chunk) as fixed-size float32 lists. Written page by
page, so memory holds one page, not the job. Example::

    >>> path = write_parquet(job_id, ["embed"], "/tmp/out.parquet")
    >>> pyarrow.parquet.read_table(path).column("embed_vector").type
    FixedSizeListType(fixed_size_list<element: float>[384])
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Document, Result


def _vector_dims(job_id: str, tasks: list[str], settings: Settings | None) -> dict[str, int]:
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

    fields = [pa.field("custom_id", pa.string())]
    for t in tasks:
        fields += [
            pa.field(f"{t}_status", pa.string()),
            pa.field(f"{t}_output", pa.string()),
            pa.field(f"{t}_error", pa.string()),
        ]
        if t in dims:
            vec = pa.list_(pa.float32(), dims[t])
            fields += [pa.field(f"{t}_vector", vec), pa.field(f"{t}_chunk_vectors", pa.list_(vec))]
    return pa.schema(fields)


def write_parquet(
    job_id: str,
    tasks: list[str],
    path: str,
    page_size: int = 1000,
    settings: Settings | None = None,
) -> str:
    """Write ``job_id``'s results to ``path``; pending tasks have status ``pending``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dims = _vector_dims(job_id, tasks, settings)
    schema = _schema(tasks, dims)
    after = -1
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        while True:
            with new_session(settings) as s:
                docs = s.execute(
                    select(Document.id, Document.seq, Document.custom_id)
                    .where(Document.job_id == job_id, Document.seq > after)
                    .order_by(Document.seq)
                    .limit(page_size)
                ).all()
                if not docs and after >= 0:
                    break
                found: dict[tuple[int, str], Result] = {}
                for r in s.scalars(
                    select(Result).where(
                        Result.job_id == job_id, Result.document_id.in_([d.id for d in docs])
                    )
                ):
                    found[(r.document_id, r.task)] = r
                cols: dict[str, list[Any]] = {f.name: [] for f in schema}
                for d in docs:
                    cols["custom_id"].append(d.custom_id)
                    for t in tasks:
                        _add(cols, t, found.get((d.id, t)), dims.get(t))
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            if not docs:
                break
            after = docs[-1].seq
    return path


def _add(cols: dict[str, list[Any]], task: str, r: Result | None, dim: int | None) -> None:
    cols[f"{task}_status"].append(r.status if r is not None else "pending")
    cols[f"{task}_output"].append(
        json.dumps(r.output, ensure_ascii=False) if r is not None and r.output else None
    )
    cols[f"{task}_error"].append(r.error if r is not None else None)
    if dim is None:
        return
    if r is not None and r.vectors is not None:
        vecs = np.frombuffer(r.vectors, dtype="<f4").reshape(-1, dim)
        cols[f"{task}_vector"].append(vecs[0])
        cols[f"{task}_chunk_vectors"].append(list(vecs[1:]))
    else:
        cols[f"{task}_vector"].append(None)
        cols[f"{task}_chunk_vectors"].append(None)
