"""The unit state machine and the job counters: the only code that moves them.

A unit is ``queued`` (or ``waiting`` for its files' extraction, docbatch.domain.waiting),
``running`` once claimed (``claim_unit``), and reaches exactly one terminal state (done,
failed, cancelled) through ``close_unit``, which in the same transaction fills in a
result for each of the unit's documents that has none yet (failed or cancelled, with the
reason) and adds the unit's tally to the job's counters (docbatch.domain.closing).
Because the state change is guarded (``WHERE state = 'running'``/``'queued'``), a unit
run twice is counted once, and because results are unique per (document, task), written
once. When to retry, bisect or give up is docbatch.domain.retry's rule.

What a state change makes necessary afterwards (a unit queued again or split off, the
units an extraction released, a job's webhook) goes to the transaction's outbox
(docbatch.domain.outbox), published after commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from docbatch.domain import accounting, closing, leases, tallies, waiting
from docbatch.domain.outbox import outbox
from docbatch.domain.result_rows import insert_results
from docbatch.domain.retry import RetryPolicy
from docbatch.domain.reuse import HashedDocument, ResultIdentity, reuse_results
from docbatch.domain.waiting import UnitLimits
from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import (
    EXTRACT,
    OPEN_UNIT_STATES,
    Document,
    Job,
    JobStatus,
    JobTask,
    Result,
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


class ClaimedDocument(NamedTuple):
    """A document of a claimed unit that still needs this task's result."""

    id: int
    custom_id: str
    text: str


@dataclass
class Claim:
    unit: Unit
    job: Job
    params: dict[str, Any]
    documents: list[ClaimedDocument]


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
    policy: RetryPolicy,
    *,
    reuse: ResultIdentity | None = None,
    attempt: bool = True,
) -> Claim | None:
    """Mark a unit running (an attempt) and return its documents, or None when there is
    nothing to do. With ``attempt=False`` (a unit claimed ahead, which may never be
    computed) the attempt is counted later, by ``start_attempt`` as it starts computing.

    A unit already closed is skipped (a redelivered message), and so is one running
    under another live session's lease (claimed ahead by a live worker; the caller's own
    lease does not count: claim on the connection that holds it). A unit of a job being
    cancelled is closed as cancelled. A unit whose workers stopped often enough
    (``policy.should_split``) is bisected first, the new half going to the outbox, so a
    document that kills its worker ends up alone; a one-document unit claimed
    ``policy.max_attempts`` times already is failed rather than run again, with the
    reason its last worker recorded if any. With ``reuse`` (the worker's model identity)
    and a job created with ``reuse_results``, documents with an earlier matching result
    get a copy of it here and are not returned.
    """
    found = session.execute(
        select(Unit.job_id, Unit.state, Unit.queue).where(Unit.id == unit_id)
    ).first()
    if found is None or found.state not in OPEN_UNIT_STATES:
        if found is not None:  # a message used up all the same: room for the next unit
            outbox(session).add_dispatch(found.queue)
        return None  # closed already (a redelivery, or claimed ahead and done): no locks
    job_id = found.job_id
    # Lock order everywhere: job, then unit.
    job = lock_job(session, job_id)
    unit = session.scalar(select(Unit).where(Unit.id == unit_id).with_for_update())
    if unit is None or unit.state not in OPEN_UNIT_STATES:
        return None
    if unit.state == UnitState.waiting.value:
        return None  # its files are still being extracted; waiting.settle queues it
    if unit.state == UnitState.running.value and leases.held_elsewhere(session, unit.id):
        return None  # a live worker runs it (claimed ahead; its message arrived here)
    if job.status in (JobStatus.cancelling.value, JobStatus.cancelled.value):
        close_unit(session, unit, UnitState.cancelled, reason="job cancelled")
        finalize_job_if_done(session, job)
        return None
    now = utcnow()
    if policy.should_split(unit):
        _split(session, unit, now)
        outbox(session).add_dispatch(unit.queue)  # the new half joins the backlog
    elif policy.gives_up(unit):
        close_unit(session, unit, UnitState.failed, reason=policy.gave_up_reason(unit))
        accounting.record(session, unit, job, accounting.Tally())  # its failed documents
        finalize_job_if_done(session, job)
        return None
    # Its message (if any) is used up: the queue has room for the next one.
    outbox(session).add_dispatch(unit.queue)
    if attempt:
        unit.error = None  # a note left by the previous attempt (see note_stop)
        unit.attempts += 1
    unit.state = UnitState.running.value
    unit.claimed_at = now
    unit.worker = worker
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.running.value
    if job.started_at is None:
        job.started_at = now
    stored = session.scalar(
        select(JobTask.params).where(JobTask.job_id == job.id, JobTask.task == unit.task)
    )
    # The handler sees the task's parameters, not which deployment runs them: a result
    # records (and reuse matches) the model actually used, whatever deployment it was.
    params = {k: v for k, v in (stored or {}).items() if k != "model"}
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
    served = getattr(reuse, "deployment", None) or getattr(reuse, "task", "")
    if reuse is not None and job.reuse_results and served == unit.task:
        reused = reuse_results(
            session,
            job=job,
            task=unit.task,
            keys=getattr(reuse, "siblings", None),
            unit_id=unit.id,
            params=params or {},
            identity=reuse,
            documents=[HashedDocument(int(d.id), str(d.content_hash), str(d.text)) for d in docs],
        )
        docs = [d for d in docs if int(d.id) not in reused]
    return Claim(
        unit=unit,
        job=job,
        params=params or {},
        documents=[ClaimedDocument(int(d.id), str(d.custom_id), str(d.text)) for d in docs],
    )


def start_attempt(session: Session, unit_id: int) -> None:
    """Count the attempt of a unit claimed ahead (``claim_unit(attempt=False)``) as it
    starts computing, clearing the previous attempt's note. Until then a worker that dies
    charges it nothing: only the unit that was computing is to blame."""
    session.execute(
        update(Unit)
        .where(Unit.id == unit_id, Unit.state == UnitState.running.value)
        .values(attempts=Unit.attempts + 1, error=None)
    )


def release_unit(session: Session, unit_id: int, *, refund: bool = True) -> bool:
    """Give back a running unit whose work will not be written (claimed ahead by a worker
    that stops on purpose, or its result write met a transient error): queued again and
    into the outbox. ``refund``: its attempt was counted and is taken back (not a
    failure of the unit); False for a unit claimed ahead that never started computing,
    whose attempt was never counted. False if it was not running."""
    unit = session.scalar(select(Unit).where(Unit.id == unit_id).with_for_update())
    if unit is None or unit.state != UnitState.running.value:
        return False
    unit.state = UnitState.queued.value
    if refund:
        unit.attempts = max(0, unit.attempts - 1)
    unit.published_at = utcnow()
    unit.dispatched_at = None  # back in the backlog, sent again in fair order
    outbox(session).add_dispatch(unit.queue)
    return True


def note_stop(session: Session, unit_id: int, reason: str, *, charge: bool = False) -> None:
    """Record on a running unit why its worker is about to be replaced (a time limit); the
    claim that gives up on the unit reports it, the next counted attempt clears it.
    ``charge``: count the attempt too (a unit claimed ahead whose preparation ran out of
    time: it is to blame although it never started computing)."""
    values: dict[str, Any] = {"error": reason}
    if charge:
        values["attempts"] = Unit.attempts + 1
    session.execute(
        update(Unit)
        .where(Unit.id == unit_id, Unit.state == UnitState.running.value)
        .values(**values)
    )


def is_cancelling(session: Session, job_id: str) -> bool:
    """Is the job being (or has it been) cancelled? What a running unit checks between
    batches."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status in (JobStatus.cancelling.value, JobStatus.cancelled.value)


def write_results(session: Session, rows: list[dict[str, Any]]) -> None:
    """A unit's result rows, in one statement (docbatch.domain.result_rows)."""
    insert_results(session, rows)


def close_unit(
    session: Session,
    unit: Unit,
    state: UnitState,
    *,
    reason: str | None = None,
    chunks: int = 0,
    tokens: int = 0,
    limits: UnitLimits | None = None,
) -> bool:
    """Move an open unit to a terminal state and count it; False if it was already closed.

    Documents of the unit that have no result yet get one: ``cancelled`` when the unit
    is cancelled, otherwise ``failed`` with ``reason`` (docbatch.domain.closing). Closing
    an ``extract`` unit settles the model units waiting on its documents
    (docbatch.domain.waiting: cut by ``limits``, else kept whole); those it queues go to
    the outbox.
    """
    if not closing.close(session, unit, state, reason=reason, chunks=chunks, tokens=tokens):
        return False
    outbox(session).add_dispatch(unit.queue)  # a worker is free: its queue's next unit
    if unit.task == EXTRACT:
        waiting.settle(session, unit.job_id, unit.seq_lo, unit.seq_hi, limits)
    return True


def finalize_job_if_done(session: Session, job: Job) -> bool:
    """Give the (locked) job its terminal status once no unit is open; True if it did.

    Asked at every unit close: it reads the job's unit tallies (docbatch.domain.tallies),
    a few rows, not its open units, whose count is the backlog's length."""
    if JobStatus(job.status).terminal:
        return False
    if tallies.open_units(session, job.id):
        return False
    tallies.forget(session, job.id)
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
    if job.deleting_at is not None:
        # Deleted while it ran: its rows go now (docbatch.domain.deletion); no webhook of
        # an end nobody will be able to read.
        outbox(session).add_delete(job.id)
        return True
    if job.webhook_url:
        # The delivery row commits with the status; the outbox sends it after commit
        # (docbatch.worker.webhooks delivers it).
        delivery = session.execute(
            insert_ignore(session, WebhookDelivery)
            .values(
                job_id=job.id,
                url=job.webhook_url,
                event=f"job.{status.value}",
                attempts=0,
                next_attempt_at=job.finished_at,
                created_at=job.finished_at,
            )
            .returning(WebhookDelivery.id)
        ).scalar_one_or_none()
        if delivery is not None:
            outbox(session).add_webhooks([delivery])
    return True
