"""Writing a new job's documents: ``COPY`` in batches, a duplicate ``custom_id`` found by
the table's unique key rather than by a set of every id in the api.

An upload is read one document at a time, and what the api holds for it stays the same
size whatever the job's: one batch of rows (``INSERT_BATCH``). Each batch goes in under a
savepoint; when the unique key ``(job_id, custom_id)`` refuses it, the batch is looked up
against what is already written and against itself, in document order, and the first
repeat is the error (``documents[i].custom_id`` or ``document.custom_id`` with its NDJSON
line), as if it had been checked while it was read::

    writer = DocumentWriter(session, job.id)
    for index, row in enumerate(rows):
        writer.add(row, index=index, line=None)  # InputError: a duplicate custom_id
    writer.flush()
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from docbatch.schema.errors import InputError
from docbatch.schema.tables import Document

INSERT_BATCH = 2000


def insert_documents(session: Session, rows: list[dict[str, Any]]) -> None:
    """Bulk-insert documents: ``COPY`` on Postgres, executemany elsewhere (SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        columns = [{k: v for k, v in r.items() if k != "meta_json"} for r in rows]
        session.execute(insert(Document), columns)
        return
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY documents (job_id, seq, custom_id, text, metadata, content_hash) FROM STDIN"
        ) as copy,
    ):
        for r in rows:
            meta = r.get("meta_json")
            if meta is None and r["meta"] is not None:
                meta = json.dumps(r["meta"])
            copy.write_row(
                (r["job_id"], r["seq"], r["custom_id"], r["text"], meta, r["content_hash"])
            )


def duplicate_custom_id(custom_id: str, index: int, line: int | None) -> InputError:
    where = f"documents[{index}].custom_id" if line is None else "document.custom_id"
    return InputError(where, f"duplicate custom_id {custom_id!r}", line=line)


class DocumentWriter:
    """The documents of the job ``job_id`` being created, written a batch at a time."""

    def __init__(self, session: Session, job_id: str) -> None:
        self.session = session
        self.job_id = job_id
        self.rows: list[dict[str, Any]] = []
        self.where: list[tuple[int, int | None]] = []  # (index, NDJSON line) of each row

    def add(self, row: dict[str, Any], *, index: int, line: int | None) -> None:
        self.rows.append(row)
        self.where.append((index, line))
        if len(self.rows) >= INSERT_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the rows held; InputError naming the first repeated custom_id, if any."""
        if not self.rows:
            return
        try:
            with self.session.begin_nested():
                insert_documents(self.session, self.rows)
        except Exception:
            found = self.first_duplicate()  # the savepoint is gone: the session reads again
            if found is not None:
                self.rows, self.where = [], []
                raise found from None
            raise
        self.rows, self.where = [], []

    def first_duplicate(self) -> InputError | None:
        """The first row held whose custom_id is written already or held earlier: what
        to report before any later error of the upload (it comes first)."""
        if not self.rows:
            return None
        ids = [r["custom_id"] for r in self.rows]
        seen = set(
            self.session.scalars(
                select(Document.custom_id).where(
                    Document.job_id == self.job_id, Document.custom_id.in_(ids)
                )
            )
        )
        for custom_id, (index, line) in zip(ids, self.where, strict=True):
            if custom_id in seen:
                return duplicate_custom_id(custom_id, index, line)
            seen.add(custom_id)
        return None
