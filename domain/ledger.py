"""The unit state machine and the job counters: the only code that moves them.

Every unit reaches exactly one terminal state (done, failed, cancelled) through
``close_unit``, which in the same transaction fills in a result for each of the
unit's documents that has none yet (failed or cancelled, with the reason) and
adds the unit's tally to the job's counters. Because the state change is guarded
(``WHERE state = 'running'``/``'queued'``), a unit run twice is counted once,
and because results are unique per (document, task), written once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, literal, select, update
from sqlalchemy.orm import Session

from docbatch.domain import leases
from docbatch.domain.reuse import ResultIdentity, reuse_results
from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import (
    EXTRACT,
    NOT_STARTED_UNIT_STATES,
    OPEN_UNIT_STATES,
    Document,
    Job,
    JobStatus,
    JobTask,
    Result,
    ResultStatus,
    Unit,
    UnitState,
    WebhookDelivery,
    utcnow,
)


def lock_job(session: Session, job_id: str) -> Job:
    """Lock the job row: unit closes of one job serialise here, so exactly one sees the last.

    The row is read again under the lock even if the session already holds it
    (``populate_existing``): a status read before the lock may be stale by now.
    """
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert job is not None, job_id
    return job


# A unit whose workers stopped this many times without closing it is split in two on its
# next claim, so that a document that kills its worker ends up alone (and fails alone).
SPLIT_AFTER_STOPS = 2


@dataclass
class Claim:
    unit: Unit
    job: Job
    params: dict[str, Any]
    documents: list[tuple[int, str, str]]  # (document id, custom_id, text)
    # Units split off this one at this claim: (unit id, queue), to publish after commit.
    split_off: list[tuple[int, str]] = field(default_factory=list)


def _gave_up_reason(unit: Unit, max_attempts: int) -> str:
    if unit.error:  # what the last attempt's worker recorded before it was replaced
        why = unit.error
    elif unit.seq_lo == unit.seq_hi:
        why = f"this document killed the worker {unit.attempts} times (out of memory or crash?)"
    else:
        why = "the worker processing this unit stopped each time (out of memory or crash?)"
    return (
        f"gave up after {unit.attempts} attempts: {why}; DOCBATCH_MAX_UNIT_ATTEMPTS={max_attempts}"
    )


def _split(session: Session, unit: Unit, now: dt.datetime) -> tuple[int, str]:
    """Cut the unit's document range in two: the unit keeps the first half, a new queued
    unit gets the second (counted as having stopped a worker once, so it splits at its
    next stop rather than its second)."""
    mid = (unit.seq_lo + unit.seq_hi) // 2
    share = unit.est_tokens * (unit.seq_hi - mid) // (unit.seq_hi - unit.seq_lo + 1)
    other = Unit(
        job_id=unit.job_id,
        task=unit.task,
        queue=unit.queue,
        seq_lo=mid + 1,
        seq_hi=unit.seq_hi,
        est_tokens=share,
        state=UnitState.queued.value,
        attempts=1,
        published_at=now,
    )
    unit.seq_hi = mid
    unit.est_tokens -= share
    session.add(other)
    session.flush()
    return int(other.id), other.queue


def claim_unit(
    session: Session,
    unit_id: int,
    worker: str,
    max_attempts: int,
    *,
    reuse: ResultIdentity | None = None,
) -> Claim | None:
    """Mark a unit running and return its documents, or None when there is nothing to do.

    A unit already closed is skipped (a redelivered message). A unit of a job being
    cancelled is closed as cancelled. A unit whose workers stopped
    ``SPLIT_AFTER_STOPS`` times (killed, or replaced past its time limit) is bisected
    first (``Claim.split_off``), so a document that kills its worker ends up alone; a
    one-document unit claimed ``max_attempts`` times already is failed rather than run
    again, with the reason its last worker recorded if any. With ``reuse`` (the
    worker's model identity) and a job created with ``reuse_results``, documents with
    an earlier matching result get a copy of it here and are not returned.
    """
    found = session.execute(select(Unit.job_id, Unit.state).where(Unit.id == unit_id)).first()
    if found is None or found.state not in OPEN_UNIT_STATES:
        return None  # closed already (a redelivery, or claimed ahead and done): no locks
    job_id = found.job_id
    # Lock order everywhere: job, then unit.
    job = lock_job(session, job_id)
    unit = session.scalar(select(Unit).where(Unit.id == unit_id).with_for_update())
    if unit is None or unit.state not in OPEN_UNIT_STATES:
        return None
    if unit.state == UnitState.waiting.value:
        return None  # its files are still being extracted; settle_waiting queues it
    if unit.state == UnitState.running.value and leases.held_elsewhere(session, unit.id):
        return None  # a live worker runs it (claimed ahead; its message arrived here)
    if job.status in (JobStatus.cancelling.value, JobStatus.cancelled.value):
        close_unit(session, unit, UnitState.cancelled, reason="job cancelled")
        finalize_job_if_done(session, job)
        return None
    now = utcnow()
    split_off: list[tuple[int, str]] = []
    if unit.seq_hi > unit.seq_lo and unit.attempts >= SPLIT_AFTER_STOPS:
        split_off.append(_split(session, unit, now))
    elif unit.attempts >= max_attempts:
        close_unit(session, unit, UnitState.failed, reason=_gave_up_reason(unit, max_attempts))
        finalize_job_if_done(session, job)
        return None
    unit.error = None  # a note left by the previous attempt (see note_stop)
    unit.state = UnitState.running.value
    unit.attempts += 1
    unit.claimed_at = now
    unit.worker = worker
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.running.value
    if job.started_at is None:
        job.started_at = now
    params = session.scalar(
        select(JobTask.params).where(JobTask.job_id == job.id, JobTask.task == unit.task)
    )
    # NOT EXISTS on the (document, task) key: O(unit), not O(job), per claim.
    has_result = exists().where(Result.document_id == Document.id, Result.task == unit.task)
    docs = session.execute(
        select(Document.id, Document.custom_id, Document.text, Document.content_hash)
        .where(
            Document.job_id == job.id,
            Document.seq.between(unit.seq_lo, unit.seq_hi),
            ~has_result,
        )
        .order_by(Document.seq)
    ).all()
    # A misrouted unit (another task's worker) must not borrow results under this model.
    if reuse is not None and job.reuse_results and getattr(reuse, "task", "") == unit.task:
        reused = reuse_results(
            session,
            job=job,
            task=unit.task,
            unit_id=unit.id,
            params=params or {},
            identity=reuse,
            documents=[(int(d[0]), str(d[3]), str(d[2])) for d in docs],
        )
        docs = [d for d in docs if int(d[0]) not in reused]
    return Claim(
        unit=unit,
        job=job,
        params=params or {},
        documents=[(int(d[0]), str(d[1]), str(d[2])) for d in docs],
        split_off=split_off,
    )


def release_unit(session: Session, unit_id: int) -> str | None:
    """Give back a running unit whose work will not be written (claimed ahead by a worker
    that stops on purpose, or its result write failed): queued again, its claim not
    counted as an attempt. Returns its queue to publish it on, or None if it was not
    running."""
    unit = session.scalar(select(Unit).where(Unit.id == unit_id).with_for_update())
    if unit is None or unit.state != UnitState.running.value:
        return None
    unit.state = UnitState.queued.value
    unit.attempts = max(0, unit.attempts - 1)
    unit.published_at = utcnow()
    return unit.queue


def note_stop(session: Session, unit_id: int, reason: str) -> None:
    """Record on a running unit why its worker is about to be replaced (a time limit); the
    claim that gives up on the unit reports it, the next claim clears it."""
    session.execute(
        update(Unit)
        .where(Unit.id == unit_id, Unit.state == UnitState.running.value)
        .values(error=reason)
    )


def job_status(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def write_results(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert_ignore(session, Result), rows)


def close_unit(
    session: Session,
    unit: Unit,
    state: UnitState,
    *,
    reason: str | None = None,
    chunks: int = 0,
    tokens: int = 0,
    sizing: tuple[int, int] | None = None,
) -> bool:
    """Move an open unit to a terminal state and count it; False if it was already closed.

    Documents of the unit that have no result yet get one: ``cancelled`` when the unit
    is cancelled, otherwise ``failed`` with ``reason``. Closing an ``extract`` unit
    settles the model units waiting on its documents (``docbatch.domain.stages``; ``sizing`` =
    (unit tokens, unit documents) to cut them by the extracted text, else kept whole);
    those it queues are in ``session.info["released_units"]`` for the caller to publish.
    """
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
    session.execute(
        insert_ignore(session, Result).from_select(
            ["job_id", "document_id", "unit_id", "task", "status", "error", "created_at"],
            missing,
        )
    )
    tally = dict(
        session.execute(
            select(Result.status, func.count())
            .join(Document, Document.id == Result.document_id)
            .where(in_unit, Result.task == unit.task)
            .group_by(Result.status)
        ).all()
    )
    session.execute(
        update(JobTask)
        .where(JobTask.job_id == unit.job_id, JobTask.task == unit.task)
        .values(
            succeeded=JobTask.succeeded + tally.get(ResultStatus.succeeded.value, 0),
            failed=JobTask.failed + tally.get(ResultStatus.failed.value, 0),
            cancelled=JobTask.cancelled + tally.get(ResultStatus.cancelled.value, 0),
            chunks=JobTask.chunks + chunks,
            tokens=JobTask.tokens + tokens,
        )
    )
    if unit.task == EXTRACT:
        from docbatch.domain import stages  # it closes the units it settles through close_unit

        released = stages.settle_waiting(session, unit.job_id, unit.seq_lo, unit.seq_hi, sizing)
        session.info.setdefault("released_units", []).extend(released)
    return True


def cancel_queued_units(session: Session, job_id: str, unit_ids: list[int]) -> int:
    """``close_unit(unit, cancelled)`` for many queued (or waiting) units of one (locked) job
    in a few set-based statements, whatever their number; returns how many were closed."""
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
    session.execute(
        insert_ignore(session, Result).from_select(
            ["job_id", "document_id", "unit_id", "task", "status", "error", "created_at"],
            missing,
        )
    )
    tally: dict[str, dict[str, int]] = {}
    for task, status, count in session.execute(
        select(Unit.task, Result.status, func.count())
        .select_from(Unit)
        .join(Document, in_units)
        .join(Result, and_(Result.document_id == Document.id, Result.task == Unit.task))
        .group_by(Unit.task, Result.status)
    ).all():
        tally.setdefault(task, {})[status] = int(count)
    for task, by_status in tally.items():
        session.execute(
            update(JobTask)
            .where(JobTask.job_id == job_id, JobTask.task == task)
            .values(
                succeeded=JobTask.succeeded + by_status.get(ResultStatus.succeeded.value, 0),
                failed=JobTask.failed + by_status.get(ResultStatus.failed.value, 0),
                cancelled=JobTask.cancelled + by_status.get(ResultStatus.cancelled.value, 0),
            )
        )
    return len(moved)


def finalize_job_if_done(session: Session, job: Job) -> bool:
    """Give the (locked) job its terminal status once no unit is open; True if it did."""
    if JobStatus(job.status).terminal:
        return False
    open_units = session.scalar(
        select(func.count())
        .select_from(Unit)
        .where(Unit.job_id == job.id, Unit.state.in_(OPEN_UNIT_STATES))
    )
    if open_units:
        return False
    totals = session.execute(
        select(
            func.sum(JobTask.total),
            func.sum(JobTask.succeeded),
            func.sum(JobTask.failed),
        ).where(JobTask.job_id == job.id)
    ).one()
    total, succeeded, failed = (int(v or 0) for v in totals)
    if job.status == JobStatus.cancelling.value:
        status = JobStatus.cancelled
    elif succeeded == total:
        status = JobStatus.completed
    elif succeeded == 0:
        status = JobStatus.failed
    else:
        status = JobStatus.completed_with_errors
    job.status = status.value
    job.finished_at = utcnow()
    if job.started_at is None:
        job.started_at = job.finished_at
    if job.webhook_url:
        # The outbox row commits with the status; it is sent after commit (worker/webhooks.py).
        session.execute(
            insert_ignore(session, WebhookDelivery).values(
                job_id=job.id,
                url=job.webhook_url,
                event=f"job.{status.value}",
                attempts=0,
                next_attempt_at=job.finished_at,
                created_at=job.finished_at,
            )
        )
    return True


def stale_units(
    session: Session, queued_before: dt.datetime, running_before: dt.datetime, limit: int = 5000
) -> list[tuple[int, str]]:
    """(id, queue) of units whose message may be lost: queued and not picked up, or running
    with no heartbeat since ``running_before`` (its worker died)."""
    rows = session.execute(
        select(Unit.id, Unit.queue)
        .where(
            ((Unit.state == UnitState.queued.value) & (Unit.published_at < queued_before))
            | (
                (Unit.state == UnitState.running.value)
                & (Unit.claimed_at < running_before)
                & (Unit.heartbeat_at.is_(None) | (Unit.heartbeat_at < running_before))
                & (Unit.published_at < running_before)
            )
        )
        .order_by(Unit.id)
        .limit(limit)
    ).all()
    return [(r.id, r.queue) for r in rows]
