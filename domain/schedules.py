"""Scheduled jobs: validating, storing and firing schedules (plain functions over a Session).

A schedule fires once per period of its cron expression, read in the schedule's
``timezone`` (UTC unless set; DST is followed). Firing inserts the
row ``(schedule_id, period_start)`` into ``schedule_runs`` with ON CONFLICT DO
NOTHING; only the transaction whose insert took creates the job, in the same
transaction, so any number of beats and tick workers racing on one period make
exactly one job. The caller publishes the job's units after commit.

Cron: five fields (minute hour day-of-month month day-of-week), or six with a
trailing seconds field (croniter's convention), e.g. ``0 2 * * *`` nightly at 02:00
in the schedule's zone, ``* * * * * */10`` every ten seconds.

What a run produces: a new job over the files the folder holds at that moment. With
``reuse_results`` (the default) a document identical to one processed before (same text,
tasks and model) is copied, not recomputed (``reused`` in its results); it is still in
the new job's results. With ``only_changed`` the job holds only the files that are new,
or whose size or modification time changed, since they last went into one of this
schedule's jobs; a run with nothing new records "nothing new" and makes no job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from docbatch.domain.jobs import NewJob, create_job, parse_tasks
from docbatch.domain.sources import FileLimits, open_source, parse_source
from docbatch.schema.db import insert_ignore
from docbatch.schema.errors import Conflict, InputError, NotFound, PermanentError, QuotaExceeded
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Job, Schedule, ScheduleFile, ScheduleRun, utcnow
from docbatch.schema.validation import validate_schedule_name

RECENT_RUNS = 20
FIELDS = (
    "name",
    "cron",
    "source",
    "tasks",
    "reuse_results",
    "enabled",
    "webhook_url",
    "priority",
    "timezone",
    "only_changed",
)
NOTHING_NEW = "nothing new: every file was in an earlier run (only_changed); no job made"


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


def parse_timezone(raw: Any) -> str:
    if raw is None:
        return "UTC"
    if not isinstance(raw, str) or not raw.strip():
        raise InputError("timezone", "must be an IANA zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            "timezone", f"{raw!r} is not a known time zone; use an IANA name (Europe/Berlin)"
        ) from None
    return raw


def _zoned(now: dt.datetime, tz: str) -> dt.datetime:
    return _aware(now).astimezone(ZoneInfo(tz))


def current_period(cron: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    """The start of the period ``now`` falls in (UTC): the latest fire time at or before
    ``now``, with ``cron`` read in zone ``tz``."""
    # croniter steps strictly before its start; nudge so an exact fire time counts as due.
    start = _zoned(now, tz) + dt.timedelta(microseconds=1)
    return _aware(croniter(cron, start).get_prev(dt.datetime)).astimezone(dt.UTC)


def next_fire(cron: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    return _aware(croniter(cron, _zoned(now, tz)).get_next(dt.datetime)).astimezone(dt.UTC)


def due_period(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The period to fire now, or None; periods that began before the schedule existed don't
    fire (a nightly schedule created at noon first runs the next night)."""
    period = current_period(schedule.cron, now, schedule.timezone or "UTC")
    return period if period >= _aware(schedule.created_at) else None


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The job options a schedule hands to its jobs, validated (errors name the field)."""
    from pydantic import TypeAdapter, ValidationError

    from docbatch.schema.models import JobCreate

    out: dict[str, Any] = {}
    for field in ("webhook_url", "priority"):
        if field not in body:
            continue
        try:
            kind: Any = JobCreate.model_fields[field].rebuild_annotation()
            out[field] = TypeAdapter(kind).validate_python(body[field])
        except ValidationError as exc:
            raise InputError(field, exc.errors()[0]["msg"]) from None
    if "timezone" in body:
        out["timezone"] = parse_timezone(body["timezone"])
    return out


def create_schedule(
    session: Session, settings: Settings, tenant: str, body: dict[str, Any]
) -> Schedule:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InputError(unknown[0], f"unknown field; expected {', '.join(FIELDS)}")
    name = validate_schedule_name(body.get("name"))
    cron = parse_cron(body.get("cron"))
    source = parse_source(body.get("source"), settings.schedule_folder_roots, tenant)
    tasks = parse_tasks(body.get("tasks"), settings)
    flags: dict[str, Any] = _options(body)
    for flag, default in (("reuse_results", True), ("enabled", True), ("only_changed", False)):
        value = body.get(flag, default)
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


def set_enabled(session: Session, tenant: str | None, ref: str, enabled: bool) -> Schedule:
    """Pause (False) or resume (True): a paused schedule fires nothing, and on resume only
    periods from then on fire (the ones missed while paused are not made up)."""
    schedule = get_schedule(session, tenant, ref)
    if enabled and not schedule.enabled:
        # Periods missed while paused do not fire late: count from now.
        schedule.created_at = max(_aware(schedule.created_at), utcnow())
    schedule.enabled = enabled
    session.flush()
    return schedule


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


def latest_run(session: Session, schedule_id: str) -> Any | None:
    """The most recent run (by when it fired), with its job's status; None if never."""
    runs = session.execute(
        select(
            ScheduleRun.period_start,
            ScheduleRun.job_id,
            ScheduleRun.error,
            ScheduleRun.fired_at,
            Job.status,
        )
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.fired_at.desc())
        .limit(1)
    ).first()
    return runs


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
    source = open_source(
        schedule.source,
        schedule.tenant,
        settings.schedule_folder_roots,
        FileLimits(
            settings.max_document_bytes,
            settings.max_request_bytes,
            settings.extract_max_bytes,
        ),
    )
    seen: dict[str, str] | None = None
    if schedule.only_changed:
        query = select(ScheduleFile.name, ScheduleFile.fingerprint).where(
            ScheduleFile.schedule_id == schedule.id
        )
        seen = {row.name: row.fingerprint for row in session.execute(query)}
    try:
        with session.begin_nested():
            documents = source.iter_documents(skip=seen) if seen is not None else None
            new = create_job(
                session,
                settings,
                tenant=schedule.tenant,
                tasks=list(schedule.tasks),
                documents=documents if documents is not None else source.iter_documents(),
                name=f"{schedule.name} {stamp}",
                priority=schedule.priority or 0,
                webhook_url=schedule.webhook_url,
                reuse_results=schedule.reuse_results,
            )
            if seen is not None:
                _remember(session, schedule.id, source.fingerprints)
    except (InputError, PermanentError, QuotaExceeded, OSError) as exc:
        # OSError: a read failing in a way the source did not foresee (EIO, a file gone
        # between listing and reading) is still this schedule's problem, not the tick's.
        error = str(exc) if not isinstance(exc, OSError) else f"cannot read the source: {exc}"
        if seen is not None and not source.fingerprints and source.skipped:
            error = NOTHING_NEW
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


def _remember(session: Session, schedule_id: str, fingerprints: dict[str, str]) -> None:
    names = list(fingerprints)
    for i in range(0, len(names), 500):
        part = names[i : i + 500]
        session.execute(
            delete(ScheduleFile).where(
                ScheduleFile.schedule_id == schedule_id, ScheduleFile.name.in_(part)
            )
        )
        session.execute(
            insert(ScheduleFile),
            [{"schedule_id": schedule_id, "name": n, "fingerprint": fingerprints[n]} for n in part],
        )


def run_now(
    session: Session, settings: Settings, schedule: Schedule, fired_by: str
) -> Firing | None:
    """Fire ``schedule`` at once, outside its cron (a run of its own; the cron periods
    still fire as usual)."""
    return fire(session, settings, schedule, utcnow(), fired_by)


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
