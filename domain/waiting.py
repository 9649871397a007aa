"""Model units that wait for the extract stage.

A job's files are extracted before its model tasks see them: ``create_job`` makes, for
each range of files, one ``extract`` unit (queued) and one unit per model task in state
``waiting`` (open, never published). When an extract unit closes
(``ledger.close_unit``), ``settle`` looks at the waiting units over its documents; each
one with no extract unit still open over its range (an extract unit may have been split
in two) is settled:

- its documents whose extraction did not succeed get this task's result now: ``failed``
  with ``"extraction failed: <why>"``, or ``cancelled`` (counted when the unit closes);
- if every document of its range has a result, it is closed at once (through
  ``docbatch.domain.closing``, so counts add up as always); if the job is being
  cancelled it is closed as cancelled;
- otherwise it is queued, cut first by the extracted text's estimated tokens (like a
  text job's units) when ``limits`` are given, and appended to the transaction's outbox.

Only this module, ``docbatch.domain.closing`` and ``docbatch.domain.ledger`` move a
waiting unit.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import case, exists, func, insert, literal, select
from sqlalchemy.orm import Session

from docbatch.domain import closing
from docbatch.domain.outbox import outbox
from docbatch.schema.db import insert_ignore
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
    EXTRACT,
    OPEN_UNIT_STATES,
    Document,
    Job,
    JobStatus,
    Result,
    ResultStatus,
    Unit,
    UnitState,
    utcnow,
)

CHARS_PER_TOKEN = 4
FAILED_PREFIX = "extraction failed: "


class UnitLimits(NamedTuple):
    """How big a unit may get: estimated tokens and documents (DOCBATCH_UNIT_TOKENS,
    DOCBATCH_UNIT_MAX_DOCUMENTS)."""

    tokens: int
    documents: int

    @classmethod
    def of(cls, settings: Settings) -> UnitLimits:
        return cls(settings.unit_tokens, settings.unit_max_documents)


def _overlaps(a_lo: int, a_hi: int, b_lo: int, b_hi: int) -> bool:
    return a_lo <= b_hi and b_lo <= a_hi


def settle(
    session: Session, job_id: str, lo: int, hi: int, limits: UnitLimits | None = None
) -> None:
    """Settle the job's waiting units over documents ``lo..hi`` whose extraction is over;
    those now queued go to the outbox. The job row is locked by the caller (every unit
    close holds it)."""
    waiting = session.scalars(
        select(Unit)
        .where(
            Unit.job_id == job_id,
            Unit.state == UnitState.waiting.value,
            Unit.seq_lo <= hi,
            Unit.seq_hi >= lo,
        )
        .order_by(Unit.id)
    ).all()
    if not waiting:
        return
    extracting = session.execute(
        select(Unit.seq_lo, Unit.seq_hi).where(
            Unit.job_id == job_id, Unit.task == EXTRACT, Unit.state.in_(OPEN_UNIT_STATES)
        )
    ).all()
    job = session.get(Job, job_id)
    assert job is not None
    cancelling = job.status in (JobStatus.cancelling.value, JobStatus.cancelled.value)
    box = outbox(session)
    for unit in waiting:
        if any(_overlaps(unit.seq_lo, unit.seq_hi, e_lo, e_hi) for e_lo, e_hi in extracting):
            continue
        if cancelling:
            closing.close(session, unit, UnitState.cancelled, reason="job cancelled")
            continue
        _copy_extract_failures(session, unit)
        for queue in {queue for _unit_id, queue in _queue(session, unit, limits)}:
            box.add_dispatch(queue)  # the dispatcher sends them in fair order


def _copy_extract_failures(session: Session, unit: Unit) -> None:
    """This task's result for each document of ``unit`` whose extraction failed or was
    cancelled: the same status, the extraction's reason."""
    extract = select(Result).where(Result.task == EXTRACT).subquery()
    error = case(
        (extract.c.status == ResultStatus.cancelled.value, extract.c.error),
        else_=literal(FAILED_PREFIX) + func.coalesce(extract.c.error, "no reason recorded"),
    )
    rows = (
        select(
            literal(unit.job_id),
            Document.id,
            literal(unit.id),
            literal(unit.task),
            extract.c.status,
            error,
            literal(utcnow()),
        )
        .join(extract, extract.c.document_id == Document.id)
        .where(
            Document.job_id == unit.job_id,
            Document.seq.between(unit.seq_lo, unit.seq_hi),
            extract.c.status != ResultStatus.succeeded.value,
        )
    )
    session.execute(
        insert_ignore(session, Result).from_select(
            ["job_id", "document_id", "unit_id", "task", "status", "error", "created_at"], rows
        )
    )


def _queue(session: Session, unit: Unit, limits: UnitLimits | None) -> list[tuple[int, str]]:
    """Queue ``unit`` (cut by ``limits``), or close it when nothing is left to compute;
    returns the (unit id, queue) now queued."""
    has_result = exists().where(Result.document_id == Document.id, Result.task == unit.task)
    docs = session.execute(
        select(Document.seq, func.length(Document.text), has_result)
        .where(Document.job_id == unit.job_id, Document.seq.between(unit.seq_lo, unit.seq_hi))
        .order_by(Document.seq)
    ).all()
    if all(done for _seq, _chars, done in docs):
        closing.close(session, unit, UnitState.done)
        return []
    # Ranges cover every document of the unit (those with a result too: the unit that
    # holds them counts them when it closes), cut by the tokens still to compute.
    ranges: list[list[int]] = []  # [lo, hi, est]
    count = 0
    for seq, chars, done in docs:
        est = 0 if done else max(1, int(chars or 0) // CHARS_PER_TOKEN)
        if (
            ranges
            and limits
            and count
            and (ranges[-1][2] + est > limits.tokens or count >= limits.documents)
        ):
            ranges[-1][1] = seq - 1
            ranges.append([seq, seq, 0])
            count = 0
        if not ranges:
            ranges.append([unit.seq_lo, seq, 0])
        ranges[-1][1] = seq
        ranges[-1][2] += est
        count += 1
    ranges[-1][1] = unit.seq_hi
    now = utcnow()
    unit.seq_hi, unit.est_tokens = ranges[0][1], ranges[0][2]
    unit.state = UnitState.queued.value
    unit.published_at = now
    queued = [(int(unit.id), unit.queue)]
    for r_lo, r_hi, est in ranges[1:]:
        new_id = session.execute(
            insert(Unit)
            .values(
                job_id=unit.job_id,
                task=unit.task,
                queue=unit.queue,
                seq_lo=r_lo,
                seq_hi=r_hi,
                est_tokens=est,
                state=UnitState.queued.value,
                published_at=now,
            )
            .returning(Unit.id)
        ).scalar_one()
        queued.append((int(new_id), unit.queue))
    session.flush()
    return queued
