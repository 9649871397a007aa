"""Closing units: the terminal state, a result for every document, and the job's counters.

Every unit reaches exactly one terminal state (done, failed, cancelled) here. In the same
transaction each of its documents that has no result yet gets one (``cancelled`` when the
unit is cancelled, otherwise ``failed`` with the reason) and the unit's tally is added to
the job's counters. The state change is guarded (``WHERE state IN open states``), so a
unit closed twice is counted once.

This is the bottom of the ledger: it settles nothing and publishes nothing.
``docbatch.domain.ledger.close_unit`` closes a unit and then settles the units that
waited on it (``docbatch.domain.waiting``), which close theirs through here.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import and_, exists, func, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import (
    NOT_STARTED_UNIT_STATES,
    OPEN_UNIT_STATES,
    Document,
    JobTask,
    Result,
    ResultStatus,
    Unit,
    UnitState,
    utcnow,
)

_RESULT_COLUMNS = ["job_id", "document_id", "unit_id", "task", "status", "error", "created_at"]


def close(
    session: Session,
    unit: Unit,
    state: UnitState,
    *,
    reason: str | None = None,
    chunks: int = 0,
    tokens: int = 0,
) -> bool:
    """Move an open unit to a terminal state and count it; False if it was already closed."""
    now = utcnow()
    closed = session.execute(
        update(Unit)
        .where(Unit.id == unit.id, Unit.state.in_(OPEN_UNIT_STATES))
        .values(state=state.value, finished_at=now, error=reason)
        .returning(Unit.job_id, Unit.task, Unit.seq_lo, Unit.seq_hi)
    ).first()
    if closed is None:
        return False
    # The object says what the row now holds, without a read back (expiring it would
    # cost a round trip at the next attribute the caller reads).
    for key, value in {"state": state.value, "finished_at": now, "error": reason}.items():
        set_committed_value(unit, key, value)
    fill = ResultStatus.cancelled if state == UnitState.cancelled else ResultStatus.failed
    span = _Span(int(unit.id), *closed)
    tally = _fill(session, span, fill, reason or fill.value, utcnow())
    session.execute(
        update(JobTask)
        .where(JobTask.job_id == unit.job_id, JobTask.task == unit.task)
        .values(**_added(tally), chunks=JobTask.chunks + chunks, tokens=JobTask.tokens + tokens)
    )
    return True


class _Span(NamedTuple):
    """A closed unit's documents: ``seq_lo..seq_hi`` of one job, for one task."""

    unit_id: int
    job_id: str
    task: str
    seq_lo: int
    seq_hi: int


def _fill(
    session: Session, span: _Span, fill: ResultStatus, reason: str, now: dt.datetime
) -> dict[str, int]:
    """A ``fill`` result for each document of ``span`` that has none for its task; returns
    the span's results per status (and ``reused``).

    One unit at a time, its bounds as values: the planner then sees a unit's few hundred
    documents and probes the (document, task) key for each. Over several units at once
    (bounds from a join) it expected tens of thousands of rows each and hashed every
    result in the database, every batch: a million-document cancel took minutes."""
    in_unit = and_(Document.job_id == span.job_id, Document.seq.between(span.seq_lo, span.seq_hi))
    has_result = exists().where(Result.document_id == Document.id, Result.task == span.task)
    missing = select(
        literal(span.job_id),
        Document.id,
        literal(span.unit_id),
        literal(span.task),
        literal(fill.value),
        literal(reason),
        literal(now),
    ).where(in_unit, ~has_result)
    session.execute(insert_ignore(session, Result).from_select(_RESULT_COLUMNS, missing))
    tally: dict[str, int] = {}
    for status, count, reused in session.execute(
        select(Result.status, func.count(), _REUSED)
        .join(Document, Document.id == Result.document_id)
        .where(in_unit, Result.task == span.task)
        .group_by(Result.status)
    ).all():
        tally[status] = int(count)
        tally[_REUSED_KEY] = tally.get(_REUSED_KEY, 0) + int(reused or 0)
    return tally


# Reused results are succeeded ones copied from an earlier job; counted beside the statuses.
_REUSED = func.count().filter(Result.reused.is_(True))
_REUSED_KEY = "reused"


def _added(tally: dict[str, int]) -> dict[str, object]:
    """The job task's counters plus a unit's tally (status -> results, and reused)."""
    return {
        "succeeded": JobTask.succeeded + tally.get(ResultStatus.succeeded.value, 0),
        "failed": JobTask.failed + tally.get(ResultStatus.failed.value, 0),
        "cancelled": JobTask.cancelled + tally.get(ResultStatus.cancelled.value, 0),
        "reused": JobTask.reused + tally.get(_REUSED_KEY, 0),
    }


def cancel_not_started(session: Session, job_id: str, unit_ids: list[int]) -> int:
    """``close(unit, cancelled)`` for many queued (or waiting) units of one (locked) job:
    one statement moves them all, then two per unit fill and count its documents (each
    as cheap as a unit's close, whatever the job's size); returns how many were closed."""
    if not unit_ids:
        return 0
    now = utcnow()
    moved = [
        _Span(int(r.id), job_id, r.task, int(r.seq_lo), int(r.seq_hi))
        for r in session.execute(
            update(Unit)
            .where(
                Unit.id.in_(unit_ids),
                Unit.job_id == job_id,
                Unit.state.in_(NOT_STARTED_UNIT_STATES),
            )
            .values(state=UnitState.cancelled.value, finished_at=now, error="job cancelled")
            .returning(Unit.id, Unit.task, Unit.seq_lo, Unit.seq_hi)
        )
    ]
    by_task: dict[str, dict[str, int]] = {}
    for span in moved:
        tally = by_task.setdefault(span.task, {})
        for key, n in _fill(session, span, ResultStatus.cancelled, "job cancelled", now).items():
            tally[key] = tally.get(key, 0) + n
    for task, tally in by_task.items():
        session.execute(
            update(JobTask)
            .where(JobTask.job_id == job_id, JobTask.task == task)
            .values(**_added(tally))
        )
    return len(moved)
