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

from sqlalchemy import and_, exists, func, literal, select, update
from sqlalchemy.orm import Session

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
    moved = session.execute(  # type: ignore[attr-defined]
        update(Unit)
        .where(Unit.id == unit.id, Unit.state.in_(OPEN_UNIT_STATES))
        .values(state=state.value, finished_at=utcnow(), error=reason)
    ).rowcount
    if not moved:
        return False
    session.expire(unit)
    fill = ResultStatus.cancelled if state == UnitState.cancelled else ResultStatus.failed
    in_unit = and_(Document.job_id == unit.job_id, Document.seq.between(unit.seq_lo, unit.seq_hi))
    has_result = exists().where(Result.document_id == Document.id, Result.task == unit.task)
    missing = select(
        literal(unit.job_id),
        Document.id,
        literal(unit.id),
        literal(unit.task),
        literal(fill.value),
        literal(reason or fill.value),
        literal(utcnow()),
    ).where(in_unit, ~has_result)
    session.execute(insert_ignore(session, Result).from_select(_RESULT_COLUMNS, missing))
    tally: dict[str, int] = {}
    for status, count, reused in session.execute(
        select(Result.status, func.count(), _REUSED)
        .join(Document, Document.id == Result.document_id)
        .where(in_unit, Result.task == unit.task)
        .group_by(Result.status)
    ).all():
        tally[status] = int(count)
        tally[_REUSED_KEY] = tally.get(_REUSED_KEY, 0) + int(reused or 0)
    session.execute(
        update(JobTask)
        .where(JobTask.job_id == unit.job_id, JobTask.task == unit.task)
        .values(**_added(tally), chunks=JobTask.chunks + chunks, tokens=JobTask.tokens + tokens)
    )
    return True


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
    """``close(unit, cancelled)`` for many queued (or waiting) units of one (locked) job in
    a few set-based statements, whatever their number; returns how many were closed."""
    if not unit_ids:
        return 0
    now = utcnow()
    moved = [
        int(unit_id)
        for unit_id in session.scalars(
            update(Unit)
            .where(
                Unit.id.in_(unit_ids),
                Unit.job_id == job_id,
                Unit.state.in_(NOT_STARTED_UNIT_STATES),
            )
            .values(state=UnitState.cancelled.value, finished_at=now, error="job cancelled")
            .returning(Unit.id)
        )
    ]
    if not moved:
        return 0
    in_units = and_(
        Unit.id.in_(moved),
        Document.job_id == Unit.job_id,
        Document.seq.between(Unit.seq_lo, Unit.seq_hi),
    )
    has_result = exists().where(Result.document_id == Document.id, Result.task == Unit.task)
    missing = select(
        literal(job_id),
        Document.id,
        Unit.id,
        Unit.task,
        literal(ResultStatus.cancelled.value),
        literal("job cancelled"),
        literal(now),
    ).where(in_units, ~has_result)
    session.execute(insert_ignore(session, Result).from_select(_RESULT_COLUMNS, missing))
    tally: dict[str, dict[str, int]] = {}
    for task, status, count, reused in session.execute(
        select(Unit.task, Result.status, func.count(), _REUSED)
        .select_from(Unit)
        .join(Document, in_units)
        .join(Result, and_(Result.document_id == Document.id, Result.task == Unit.task))
        .group_by(Unit.task, Result.status)
    ).all():
        by_status = tally.setdefault(task, {})
        by_status[status] = int(count)
        by_status[_REUSED_KEY] = by_status.get(_REUSED_KEY, 0) + int(reused or 0)
    for task, by_status in tally.items():
        session.execute(
            update(JobTask)
            .where(JobTask.job_id == job_id, JobTask.task == task)
            .values(**_added(by_status))
        )
    return len(moved)
