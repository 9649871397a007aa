"""Scheduled jobs: validating, storing and firing schedules (plain functions over a Session).

A schedule fires once per period of its cron expression (UTC). Firing inserts the
row ``(schedule_id, period_start)`` into ``schedule_runs`` with ON CONFLICT DO
NOTHING; only the transaction whose insert took creates the job, in the same
transaction, so any number of beats and tick workers racing on one period make
exactly one job. The caller publishes the job's units after commit.

Cron: five fields (minute hour day-of-month month day-of-week), or six with a
trailing seconds field (croniter's convention), e.g. ``0 2 * * *`` nightly at 02:00
UTC, ``* * * * * */10`` every ten seconds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from docbatch.domain.jobs import NewJob, create_job, parse_tasks
from docbatch.domain.sources import FileLimits, open_source, parse_source
from docbatch.schema.db import insert_ignore
from docbatch.schema.errors import Conflict, InputError, NotFound, PermanentError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Job, Schedule, ScheduleRun, utcnow
from docbatch.schema.validation import validate_schedule_name

RECENT_RUNS = 20


def parse_cron(raw: Any) -> str:
    """Validate a cron expression: 5 fields, or 6 with trailing seconds; errors name ``cron``."""
    if not isinstance(raw, str) or not raw.strip():
        raise InputError("cron", "is required, e.g. '0 2 * * *' (02:00 UTC every day)")
    expr = " ".join(raw.split())
    fields = len(expr.split(" "))
    if fields not in (5, 6):
        raise InputError(
            "cron",
            f"{expr!r} has {fields} fields; expected 5 (minute hour day month weekday) "
            "or 6 (the same plus seconds)",
        )
    if not croniter.is_valid(expr):
        raise InputError("cron", f"{expr!r} is not a valid cron expression")
    return expr


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def current_period(cron: str, now: dt.datetime) -> dt.datetime:
    """The start of the period ``now`` falls in: the latest fire time at or before ``now``."""
    # croniter steps strictly before its start; nudge so an exact fire time counts as due.
    start = _aware(now) + dt.timedelta(microseconds=1)
    return _aware(croniter(cron, start).get_prev(dt.datetime))


def next_fire(cron: str, now: dt.datetime) -> dt.datetime:
    return _aware(croniter(cron, _aware(now)).get_next(dt.datetime))


def due_period(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The period to fire now, or None; periods that began before the schedule existed don't
    fire (a nightly schedule created at noon first runs the next night)."""
    period = current_period(schedule.cron, now)
    return period if period >= _aware(schedule.created_at) else None


def create_schedule(
    session: Session, settings: Settings, tenant: str, body: dict[str, Any]
) -> Schedule:
    unknown = sorted(set(body) - {"name", "cron", "source", "tasks", "reuse_results", "enabled"})
    if unknown:
        raise InputError(unknown[0], "unknown field; expected name, cron, source, tasks")
    name = validate_schedule_name(body.get("name"))
    cron = parse_cron(body.get("cron"))
    source = parse_source(body.get("source"), settings.schedule_folder_roots, tenant)
    tasks = parse_tasks(body.get("tasks"), settings)
    flags = {}
    for flag in ("reuse_results", "enabled"):
        value = body.get(flag, True)
        if not isinstance(value, bool):
            raise InputError(flag, f"must be true or false, got {value!r}")
        flags[flag] = value
    taken = session.scalar(
        select(Schedule.id).where(Schedule.tenant == tenant, Schedule.name == name)
    )
    if taken:
        raise Conflict(f"a schedule named {name!r} exists already ({taken}); remove it first")
    schedule = Schedule(
        tenant=tenant,
        name=name,
        cron=cron,
        source=source,
        tasks=tasks,
        created_at=utcnow(),
        **flags,
    )
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(session: Session, tenant: str | None, ref: str) -> Schedule:
    """By id, or by name within the tenant; another tenant's schedule is NotFound."""
    query = select(Schedule).where((Schedule.id == ref) | (Schedule.name == ref))
    if tenant is not None:
        query = query.where(Schedule.tenant == tenant)
    found = session.scalars(query).first()
    if found is None:
        raise NotFound(f"schedule {ref} not found")
    return found


def list_schedules(session: Session, tenant: str | None) -> list[Schedule]:
    query = select(Schedule).order_by(Schedule.created_at)
    if tenant is not None:
        query = query.where(Schedule.tenant == tenant)
    return list(session.scalars(query))


def delete_schedule(session: Session, tenant: str | None, ref: str) -> str:
    schedule = get_schedule(session, tenant, ref)
    session.delete(schedule)
    return schedule.id


def recent_runs(session: Session, schedule_id: str, limit: int = RECENT_RUNS) -> list[Any]:
    return list(
        session.execute(
            select(
                ScheduleRun.period_start,
                ScheduleRun.job_id,
                ScheduleRun.error,
                ScheduleRun.fired_at,
                Job.status,
            )
            .outerjoin(Job, Job.id == ScheduleRun.job_id)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.period_start.desc())
            .limit(limit)
        ).all()
    )


@dataclass
class Firing:
    schedule_id: str
    period: dt.datetime
    job: NewJob | None
    error: str | None = None


def fire(
    session: Session, settings: Settings, schedule: Schedule, period: dt.datetime, fired_by: str
) -> Firing | None:
    """Claim ``period`` for ``schedule`` and create its job; None if someone else claimed it.

    A source that cannot be read (missing folder, no documents, a bad or unreadable file,
    a file outside the tenant's folders) records the reason on the run instead of a job,
    so it is not retried every tick and other schedules are not held up.
    """
    # RETURNING, not rowcount: an ORM-enabled INSERT reports rowcount -1 (truthy) even
    # when ON CONFLICT skipped the row, which made every racer think it had won.
    claimed = session.execute(
        insert_ignore(session, ScheduleRun.__table__)
        .values(schedule_id=schedule.id, period_start=period, fired_at=utcnow(), fired_by=fired_by)
        .returning(ScheduleRun.__table__.c.schedule_id)
    ).scalar_one_or_none()
    if claimed is None:
        return None
    stamp = period.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        with session.begin_nested():
            new = create_job(
                session,
                settings,
                tenant=schedule.tenant,
                tasks=list(schedule.tasks),
                documents=open_source(
                    schedule.source,
                    schedule.tenant,
                    settings.schedule_folder_roots,
                    FileLimits(
                        settings.max_document_bytes,
                        settings.max_request_bytes,
                        settings.extract_max_bytes,
                    ),
                ).iter_documents(),
                name=f"{schedule.name} {stamp}",
                reuse_results=schedule.reuse_results,
            )
    except (InputError, PermanentError, OSError) as exc:
        # OSError: a read failing in a way the source did not foresee (EIO, a file gone
        # between listing and reading) is still this schedule's problem, not the tick's.
        error = str(exc) if not isinstance(exc, OSError) else f"cannot read the source: {exc}"
        session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule.id, ScheduleRun.period_start == period)
            .values(error=error)
        )
        return Firing(schedule.id, period, None, error)
    session.execute(
        update(ScheduleRun)
        .where(ScheduleRun.schedule_id == schedule.id, ScheduleRun.period_start == period)
        .values(job_id=new.job.id)
    )
    return Firing(schedule.id, period, new)


def due_schedules(session: Session, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(schedule id, period) of enabled schedules whose current period has not fired yet."""
    due = []
    for schedule in session.scalars(select(Schedule).where(Schedule.enabled.is_(True))):
        period = due_period(schedule, now)
        if period is None:
            continue
        done = session.scalar(
            select(ScheduleRun.schedule_id).where(
                ScheduleRun.schedule_id == schedule.id, ScheduleRun.period_start == period
            )
        )
        if not done:
            due.append((schedule.id, period))
    return due
