"""Reads of the open units that must not grow with the backlog (issue 25).

"Is this job done?" (every unit close), a tenant's queued documents and tokens (every
submit under a quota), the units queued per queue and the oldest queued unit of each
deployment (every metrics scrape) used to count
the units themselves: a read as long as the backlog, per call. On Postgres they read
``unit_tallies`` instead (docbatch.schema.tables.UnitTally): a few rows per open job
task, kept exact by triggers on ``units`` in the same transaction as every unit insert,
state change and delete (so a redelivered claim, a released unit, a split, a cancel
sweep or a deleted job moves them exactly as it moves the units). On SQLite (one
machine, ``docbatch run``) there are no triggers and these reads count the units. The
oldest queued unit is read from an index (``ix_units_queued_age``), one entry per
deployment with queued units.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from docbatch.schema.statuses import TERMINAL_JOB_STATUSES
from docbatch.schema.tables import (
    EXTRACT,
    NOT_STARTED_UNIT_STATES,
    OPEN_UNIT_STATES,
    Job,
    Unit,
    UnitState,
    UnitTally,
)


def kept(session: Session) -> bool:
    """Are the tallies kept on this database (Postgres: triggers)?"""
    return session.get_bind().dialect.name == "postgresql"


def open_units(session: Session, job_id: str) -> int:
    """How many of the job's units are open (waiting, queued or running)."""
    if kept(session):
        return int(
            session.scalar(
                select(func.coalesce(func.sum(UnitTally.units), 0)).where(
                    UnitTally.job_id == job_id
                )
            )
            or 0
        )
    return int(
        session.scalar(
            select(func.count())
            .select_from(Unit)
            .where(Unit.job_id == job_id, Unit.state.in_(OPEN_UNIT_STATES))
        )
        or 0
    )


def forget(session: Session, job_id: str) -> None:
    """The job has ended: its tallies (all zero by now) go."""
    if kept(session):
        session.execute(
            delete(UnitTally).where(
                UnitTally.job_id == job_id,
                UnitTally.units == 0,
                UnitTally.documents == 0,
                UnitTally.est_tokens == 0,
            )
        )


def tenant_open(session: Session, tenant: str) -> tuple[int, int, int]:
    """(documents, estimated tokens, running units) of the tenant's open model units
    (extraction excluded) in its unfinished jobs; documents count once per task."""
    if kept(session):
        docs, tokens, running = session.execute(
            select(
                func.coalesce(func.sum(UnitTally.documents), 0),
                func.coalesce(func.sum(UnitTally.est_tokens), 0),
                func.coalesce(
                    func.sum(UnitTally.units).filter(UnitTally.state == UnitState.running.value),
                    0,
                ),
            )
            .join(Job, Job.id == UnitTally.job_id)
            .where(
                Job.tenant == tenant,
                Job.status.not_in(list(TERMINAL_JOB_STATUSES)),
                UnitTally.task != EXTRACT,
            )
        ).one()
        return int(docs), int(tokens), int(running)
    open_jobs = select(Job.id).where(
        Job.tenant == tenant, Job.status.not_in(list(TERMINAL_JOB_STATUSES))
    )
    docs, tokens, running = session.execute(
        select(
            func.coalesce(func.sum(Unit.seq_hi - Unit.seq_lo + 1), 0),
            func.coalesce(func.sum(Unit.est_tokens), 0),
            func.count().filter(Unit.state == UnitState.running.value),
        ).where(
            Unit.job_id.in_(open_jobs),
            Unit.state.in_(OPEN_UNIT_STATES),
            Unit.task != EXTRACT,
        )
    ).one()
    return int(docs), int(tokens), int(running)


def job_open(session: Session, job_id: str) -> tuple[int, int]:
    """(documents, estimated tokens) of the job's open model units (extraction excluded)."""
    if kept(session):
        docs, tokens = session.execute(
            select(
                func.coalesce(func.sum(UnitTally.documents), 0),
                func.coalesce(func.sum(UnitTally.est_tokens), 0),
            ).where(UnitTally.job_id == job_id, UnitTally.task != EXTRACT)
        ).one()
        return int(docs), int(tokens)
    docs, tokens = session.execute(
        select(
            func.coalesce(func.sum(Unit.seq_hi - Unit.seq_lo + 1), 0),
            func.coalesce(func.sum(Unit.est_tokens), 0),
        ).where(Unit.job_id == job_id, Unit.state.in_(OPEN_UNIT_STATES), Unit.task != EXTRACT)
    ).one()
    return int(docs), int(tokens)


def queued_by_queue(session: Session) -> dict[str, int]:
    """Queued units per queue (in the broker or in the backlog)."""
    if kept(session):
        rows = session.execute(
            select(UnitTally.queue, func.sum(UnitTally.units))
            .where(UnitTally.state == UnitState.queued.value)
            .group_by(UnitTally.queue)
        ).all()
    else:
        rows = session.execute(
            select(Unit.queue, func.count())
            .where(Unit.state == UnitState.queued.value)
            .group_by(Unit.queue)
        ).all()
    return {str(q): int(n) for q, n in rows if n}


def queued_by_tenant(session: Session) -> list[tuple[str, str, int]]:
    """(tenant, task, queued units) for every tenant and task with units queued."""
    if kept(session):
        rows = session.execute(
            select(Job.tenant, UnitTally.task, func.sum(UnitTally.units))
            .join(Job, Job.id == UnitTally.job_id)
            .where(UnitTally.state == UnitState.queued.value)
            .group_by(Job.tenant, UnitTally.task)
        ).all()
    else:
        rows = session.execute(
            select(Job.tenant, Unit.task, func.count())
            .join(Job, Job.id == Unit.job_id)
            .where(Unit.state == UnitState.queued.value)
            .group_by(Job.tenant, Unit.task)
        ).all()
    return [(str(t), str(task), int(n)) for t, task, n in rows if n]


def oldest_queued(session: Session) -> dict[str, dt.datetime]:
    """When the oldest queued unit of each deployment with queued units was published:
    the first entry of ``ix_units_queued_age`` per deployment, not every queued unit."""
    if kept(session):
        names = session.scalars(
            select(UnitTally.task)
            .where(UnitTally.state == UnitState.queued.value, UnitTally.units > 0)
            .distinct()
        ).all()
    else:
        names = session.scalars(
            select(Unit.task).where(Unit.state == UnitState.queued.value).distinct()
        ).all()
    out: dict[str, dt.datetime] = {}
    for name in names:
        # ORDER BY ... LIMIT 1 rather than min(): the planner, without statistics, may
        # aggregate every queued entry for min() instead of taking the first.
        oldest = session.scalar(
            select(Unit.published_at)
            .where(
                Unit.state == UnitState.queued.value,
                Unit.task == name,
                Unit.published_at.is_not(None),
            )
            .order_by(Unit.published_at)
            .limit(1)
        )
        if oldest is not None:
            out[str(name)] = oldest
    return out


def not_started_documents(session: Session, job_id: str) -> int:
    """Documents of the job's units not started yet (waiting or queued), tasks summed:
    what a cancel closes at once."""
    if kept(session):
        return int(
            session.scalar(
                select(func.coalesce(func.sum(UnitTally.documents), 0)).where(
                    UnitTally.job_id == job_id, UnitTally.state.in_(NOT_STARTED_UNIT_STATES)
                )
            )
            or 0
        )
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Unit.seq_hi - Unit.seq_lo + 1), 0)).where(
                Unit.job_id == job_id, Unit.state.in_(NOT_STARTED_UNIT_STATES)
            )
        )
        or 0
    )
