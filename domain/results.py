"""Reading results back: one dict per document, in submission order, page by page.

``iter_document_results`` (dicts) serves ``docbatch run``; ``iter_result_pages`` serves the
api's NDJSON stream with the same lines already encoded. Each page is its own short
transaction, so a stream of a million documents holds no long snapshot and no more than
a page in memory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import Text, and_, cast, select, text, true
from sqlalchemy.orm import Session

from docbatch.schema.db import is_sqlite, new_session
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Document, Result, ResultStatus

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
    settings: Settings,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"custom_id", "metadata"?, "results": {task: {...}}}`` per document.

    Tasks with no result yet show ``{"status": "pending"}``: results are readable
    while the job runs.
    """
    after = -1
    while True:
        with new_session(settings) as s:
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


# What ``json.dumps(str, ensure_ascii=False)`` calls (the C encoder): the stream's strings.
_enc = json.encoder.encode_basestring  # type: ignore[attr-defined]
_PENDING = '{"status": "pending"}'
_LINE_COLUMNS = (
    Result.task,
    Result.status,
    cast(Result.output, Text),
    Result.vectors,
    Result.error,
    Result.model_id,
    Result.model_revision,
    cast(Result.params, Text),
)


def _postgres(settings: Settings) -> bool:
    return not is_sqlite(settings)


def _json_text(stored: str | None) -> str:
    """Stored JSON text as ``json.dumps(value, ensure_ascii=False)`` writes the value.

    Rows are written by ``json.dumps`` with its default separators, and the JSON column keeps
    that text as is, so it goes out unchanged, without a parse and a re-encode. Only its
    ``\\uXXXX`` escapes (non-ASCII written with ``ensure_ascii``) differ from the stream's
    UTF-8; text that has any is decoded and re-encoded.
    """
    if stored is None:
        return "null"
    if "\\u" in stored:
        return json.dumps(json.loads(stored), ensure_ascii=False)
    return stored


def _metadata_text(stored: str | None) -> str | None:
    # The dict stream leaves out empty metadata (``if d.meta``); so does this one.
    if stored is None or stored in ("null", "{}"):
        return None
    if stored[0] == "{":
        return _json_text(stored)
    value = json.loads(stored)
    return json.dumps(value, ensure_ascii=False) if value else None


def _entry_text(row: Any, vectors: str) -> str:
    """One task's result as ``json.dumps(render_result(row), ensure_ascii=False)`` writes it."""
    status, output, vecs = row[1], row[2], row[3]
    if status != ResultStatus.succeeded.value:
        error = "null" if row[4] is None else _enc(row[4])
        return '{"status": ' + _enc(status) + ', "error": ' + error + "}"
    if vecs is not None:
        # Vectors go into the output object: parse it (the float rendering costs more anyway).
        parsed = SimpleNamespace(
            status=status,
            output=json.loads(output) if output is not None else None,
            vectors=vecs,
            model_id=row[5],
            model_revision=row[6],
            params=json.loads(row[7]) if row[7] is not None else None,
        )
        return json.dumps(render_result(parsed, vectors), ensure_ascii=False)
    out = "{}" if output is None or output == "null" else _json_text(output)
    return (
        '{"status": '
        + _enc(status)
        + ', "output": '
        + out
        + ', "model": {"id": '
        + ("null" if row[5] is None else _enc(row[5]))
        + ', "revision": '
        + ("null" if row[6] is None else _enc(row[6]))
        + '}, "params": '
        + _json_text(row[7])
        + "}"
    )


_INDEX_SCANS_ONLY = text(
    "SELECT set_config('enable_seqscan', 'off', true), "
    "set_config('enable_bitmapscan', 'off', true), set_config('jit', 'off', true)"
)


def index_scans_only(session: Session, settings: Settings) -> None:
    """Index scans only, no JIT, for the session's transaction (Postgres; a no-op on
    SQLite). For export pages: right after a job's rows are written, before autovacuum has
    analysed them, the statistics still describe a small table, and the planner scans (or
    bitmap-scans and sorts) the job's rows for every page, and JIT-compiles it
    (BENCHMARKS.md, "Measurements behind the code": a page 30 times slower)."""
    if _postgres(settings):
        session.execute(_INDEX_SCANS_ONLY)


def iter_result_pages(
    job_id: str,
    tasks: list[str],
    *,
    only_failed: bool = False,
    page_size: int = 1000,
    vectors: str = "floats",
    settings: Settings,
) -> Iterator[list[str]]:
    """The lines of ``iter_document_results``, each already JSON text (as
    ``json.dumps(line, ensure_ascii=False)`` writes it), a page of documents at a time.

    One query per page (the page's documents joined to their results), stored JSON passed
    through as text::

        >>> for page in iter_result_pages(job_id, ["embed"], settings=settings):
        ...     out.write("\\n".join(page) + "\\n")
    """
    after = -1
    while True:
        page = (
            select(
                Document.id,
                Document.seq,
                Document.custom_id,
                cast(Document.meta, Text).label("meta"),
            )
            .where(Document.job_id == job_id, Document.seq > after)
            .order_by(Document.seq)
            .limit(page_size)
            .subquery()
        )
        cond = [Result.document_id == page.c.id]
        if only_failed:
            cond.append(Result.status == ResultStatus.failed.value)
        columns: list[Any]
        if _postgres(settings):
            # LATERAL with OFFSET 0 (which keeps the planner from flattening it into a plain
            # join): each document's results through the (document_id, task) index. A plain
            # join lets the planner hash the job's whole results table for every page, which
            # makes an export quadratic in the job's size.
            found_rows = select(*_LINE_COLUMNS).where(*cond).offset(0).lateral()
            joined = page.outerjoin(found_rows, true())
            columns = list(found_rows.c)
        else:
            joined = page.outerjoin(Result, and_(*cond))
            columns = list(_LINE_COLUMNS)
        query = (
            select(page.c.seq, page.c.custom_id, page.c.meta, *columns)
            .select_from(joined)
            .order_by(page.c.seq)
        )
        with new_session(settings) as s:
            index_scans_only(s, settings)
            rows = s.execute(query).all()
        if not rows:
            return
        lines: list[str] = []
        i, n = 0, len(rows)
        while i < n:
            seq, custom_id, meta = rows[i][0], rows[i][1], rows[i][2]
            found: dict[str, str] = {}
            while i < n and rows[i][0] == seq:
                r = rows[i][3:]
                if r[0] is not None:
                    found[r[0]] = _entry_text(r, vectors)
                i += 1
            if only_failed and not found:
                continue
            parts = [
                _enc(t) + ": " + found.get(t, _PENDING)
                for t in tasks
                if not only_failed or t in found
            ]
            line = '{"custom_id": ' + _enc(custom_id) + ', "results": {' + ", ".join(parts) + "}"
            meta_text = _metadata_text(meta)
            if meta_text is not None:
                line += ', "metadata": ' + meta_text
            lines.append(line + "}")
        if lines:
            yield lines
        after = seq
