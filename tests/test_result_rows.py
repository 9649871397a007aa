"""A unit's result rows go to Postgres in one statement (docbatch.domain.result_rows) and
are stored exactly as the per-row executemany (an ORM bulk insert) stored them: None as
NULL (JSON null in a JSON column), the columns' defaults, conflicts skipped, a value too
long for its column refused rather than cut.

Real Postgres; jobs created through docbatch.domain.jobs, nothing published.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError

from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.result_rows import insert_results
from docbatch.schema.db import insert_ignore, new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Result

COLUMNS = ("status", "output", "vectors", "error", "model_id", "model_revision", "params")


def _job(n: int) -> tuple[str, list[int]]:
    settings = get_settings()
    docs = [{"custom_id": f"d{i}", "text": f"document {i}"} for i in range(n)]
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s, settings, tenant="default", tasks=[{"type": "embed"}],
            documents=((d, None) for d in docs),
        )  # fmt: skip
        ids = list(
            s.scalars(
                select(Document.id).where(Document.job_id == new.job.id).order_by(Document.seq)
            )
        )
        return new.job.id, ids


def _rows(job_id: str, ids: list[int]) -> list[dict[str, Any]]:
    base = {"job_id": job_id, "unit_id": 1, "task": "embed", "model_id": "m", "params": {"k": 1}}
    return [
        {**base, "document_id": ids[0], "status": "succeeded", "reused": False,
         "output": {"text": 'quote " back\\slash é 😀', "n": [1.5, None]},
         "vectors": b"\x00\x01\xfe\xff", "error": None, "model_revision": "r1",
         "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
        {**base, "document_id": ids[1], "status": "failed", "output": None, "vectors": None,
         "error": "it broke", "model_revision": None, "params": None},
        {**base, "document_id": ids[2], "status": "succeeded", "output": {"reused_from": "j"},
         "reused": True},
    ]  # fmt: skip


def _stored(job_id: str) -> list[tuple[Any, ...]]:
    with new_session(get_settings()) as s:
        rows = s.execute(
            select(
                Document.seq,
                *(getattr(Result, c) for c in COLUMNS),
                Result.reused,
                Result.created_at,
                Result.output.is_(None),
            )
            .join(Document, Document.id == Result.document_id)
            .where(Result.job_id == job_id)
            .order_by(Document.seq)
        ).all()
    return [tuple(r) for r in rows]


def test_a_units_rows_are_one_statement_stored_as_the_executemany_stored_them() -> None:
    settings = get_settings()
    (ours, our_ids), (theirs, their_ids) = _job(3), _job(3)
    calls: list[bool] = []
    before = dt.datetime.now(dt.UTC)
    with unit_of_work(settings, publish=False) as s:
        conn = s.connection()

        def count(*args: Any) -> None:
            calls.append(bool(args[-1]))  # executemany

        event.listen(conn, "before_cursor_execute", count)
        insert_results(s, _rows(ours, our_ids))
        event.remove(conn, "before_cursor_execute", count)
        # What ledger.write_results did before: one INSERT per row (an ORM bulk insert).
        s.execute(insert_ignore(s, Result), _rows(theirs, their_ids))
    # One statement, so one parse and one plan per unit (not one per row).
    assert calls == [False]
    got, want = _stored(ours), _stored(theirs)
    assert [r[:-2] + r[-1:] for r in got] == [r[:-2] + r[-1:] for r in want]
    assert got[0][-2] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert all(r[-2] >= before for r in got[1:])  # no created_at: the column's default
    assert [r[len(COLUMNS) + 1] for r in got] == [False, False, True]


def test_a_conflicting_row_is_skipped_and_a_too_long_value_refused_not_cut() -> None:
    settings = get_settings()
    job_id, ids = _job(3)
    first = _rows(job_id, ids)
    with unit_of_work(settings, publish=False) as s:
        insert_results(s, first[:1])
    again = [{**first[0], "status": "failed", "error": "second"}, first[1], first[1]]
    with unit_of_work(settings, publish=False) as s:
        insert_results(s, again)
    stored = _stored(job_id)
    assert [(r[0], r[1], r[4]) for r in stored] == [
        (0, "succeeded", None),
        (1, "failed", "it broke"),
    ]
    too_long = {**first[2], "model_revision": "r" * 101}  # results.model_revision is VARCHAR(100)
    with pytest.raises(DBAPIError, match="too long"), unit_of_work(settings, publish=False) as s:
        insert_results(s, [too_long])
    assert len(_stored(job_id)) == 2
