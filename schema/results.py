"""Reading results back: one dict per document, in submission order, page by page.

Used by the api's NDJSON stream and by ``docbatch run``; each page is its own short
transaction, so a stream of a million documents holds no long snapshot and no
more than a page in memory.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import select

from schema.db import new_session
from schema.tables import Document, Result, ResultStatus

VECTOR_FORMATS = ("floats", "base64")
RESULT_COLUMNS = (
    Result.document_id,
    Result.task,
    Result.status,
    Result.output,
    Result.vectors,
    Result.error,
    Result.model_id,
    Result.model_revision,
    Result.params,
)


def render_result(r: Result | Any, vectors: str = "floats") -> dict[str, Any]:
    """One task's result for the stream. ``vectors="base64"`` sends vectors compactly:
    ``vector_b64`` (the document vector) and ``chunk_vectors_b64`` (chunk rows, row-major),
    little-endian float32, ``dim`` columns."""
    entry: dict[str, Any] = {"status": r.status}
    if r.status == ResultStatus.succeeded.value:
        output = dict(r.output or {})
        if r.vectors is not None:
            vecs = np.frombuffer(r.vectors, dtype="<f4").reshape(-1, output.get("dim", 1))
            if vectors == "base64":
                output["vector_b64"] = base64.b64encode(vecs[0].tobytes()).decode()
                if len(vecs) > 1:
                    output["chunk_vectors_b64"] = base64.b64encode(vecs[1:].tobytes()).decode()
            else:
                output["vector"] = [round(float(x), 7) for x in vecs[0]]
                if len(vecs) > 1:
                    output["chunk_vectors"] = [[round(float(x), 7) for x in v] for v in vecs[1:]]
        entry["output"] = output
        entry["model"] = {"id": r.model_id, "revision": r.model_revision}
        entry["params"] = r.params
    else:
        entry["error"] = r.error
    return entry


def iter_document_results(
    job_id: str,
    tasks: list[str],
    *,
    only_failed: bool = False,
    page_size: int = 1000,
    vectors: str = "floats",
) -> Iterator[dict[str, Any]]:
    """Yield ``{"custom_id", "metadata"?, "results": {task: {...}}}`` per document.

    Tasks with no result yet show ``{"status": "pending"}``: results are readable
    while the job runs.
    """
    after = -1
    while True:
        with new_session() as s:
            docs = s.execute(
                select(Document.id, Document.seq, Document.custom_id, Document.meta)
                .where(Document.job_id == job_id, Document.seq > after)
                .order_by(Document.seq)
                .limit(page_size)
            ).all()
            if not docs:
                return
            # Plain rows, not ORM objects: identity-map bookkeeping cost more than the rest.
            # Keyed on document ids alone, so the (document_id, task) index serves the page;
            # with ``job_id`` in the filter the planner may walk the job's whole result index
            # for every page (quadratic in job size).
            query = select(*RESULT_COLUMNS).where(Result.document_id.in_([d.id for d in docs]))
            if only_failed:
                query = query.where(Result.status == ResultStatus.failed.value)
            by_doc: dict[int, dict[str, Any]] = {}
            for r in s.execute(query):
                by_doc.setdefault(r.document_id, {})[r.task] = render_result(r, vectors)
        for d in docs:
            found = by_doc.get(d.id, {})
            if only_failed and not found:
                continue
            results = (
                found if only_failed else {t: found.get(t, {"status": "pending"}) for t in tasks}
            )
            line: dict[str, Any] = {"custom_id": d.custom_id, "results": results}
            if d.meta:
                line["metadata"] = d.meta
            yield line
        after = docs[-1].seq
