"""/v1/schedules: recurring jobs over a source (create, list, get, delete, pause, resume,
run now, latest run)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from sqlalchemy.orm import Session

from docbatch.api.deps import SessionDep, SettingsDep, TenantDep
from docbatch.domain import schedules
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.errors import Conflict, NotFound
from docbatch.schema.models import SchedulePublic, ScheduleRunPublic, SchedulesPublic
from docbatch.schema.tables import Schedule, utcnow

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


def schedule_public(session: Session, schedule: Schedule, runs: bool = True) -> SchedulePublic:
    recent = schedules.recent_runs(session, schedule.id) if runs else []
    return SchedulePublic(
        id=schedule.id,
        name=schedule.name,
        cron=schedule.cron,
        source=schedule.source,
        tasks=list(schedule.tasks),
        reuse_results=schedule.reuse_results,
        enabled=schedule.enabled,
        created_at=schedule.created_at,
        next_run_at=schedules.next_fire(schedule.cron, utcnow(), schedule.timezone or "UTC"),
        priority=schedule.priority or 0,
        timezone=schedule.timezone or "UTC",
        only_changed=bool(schedule.only_changed),
        has_webhook=bool(schedule.webhook_url),
        runs=[_run_public(r) for r in recent],
    )


def _run_public(r: Any) -> ScheduleRunPublic:
    return ScheduleRunPublic(
        period_start=r.period_start,
        fired_at=r.fired_at,
        job_id=r.job_id,
        job_status=r.status,
        error=r.error,
    )


@router.post("", status_code=201, response_model=SchedulePublic)
def create_schedule(
    tenant: TenantDep, settings: SettingsDep, body: Annotated[dict[str, Any], Body()]
) -> SchedulePublic:
    """``{"name", "cron": "0 2 * * *", "source": {"type": "folder", "path", "pattern"?},
    "tasks": [...], "reuse_results"?: true, "enabled"?: true, "only_changed"?: false,
    "timezone"?: "UTC", "priority"?: 0, "webhook_url"?}``. cron is read in ``timezone``;
    ``only_changed`` makes each run take only files new or changed since they last went in;
    ``priority`` and ``webhook_url`` are handed to every job the schedule makes."""
    with transaction(settings) as s:
        schedule = schedules.create_schedule(s, settings, tenant, body)
        return schedule_public(s, schedule, runs=False)


@router.get("", response_model=SchedulesPublic)
def list_schedules(session: SessionDep, tenant: TenantDep) -> SchedulesPublic:
    found = schedules.list_schedules(session, tenant)
    return SchedulesPublic(data=[schedule_public(session, x) for x in found], count=len(found))


@router.get("/{ref}", response_model=SchedulePublic)
def get_schedule(ref: str, session: SessionDep, tenant: TenantDep) -> SchedulePublic:
    """A schedule by id or name, with its recent runs (period, job, status or error)."""
    return schedule_public(session, schedules.get_schedule(session, tenant, ref))


@router.delete("/{ref}", status_code=204)
def delete_schedule(ref: str, tenant: TenantDep, settings: SettingsDep) -> Response:
    """Stop a schedule; the jobs it already made stay."""
    with transaction(settings) as s:
        schedules.delete_schedule(s, tenant, ref)
    return Response(status_code=204)


@router.post("/{ref}/pause", response_model=SchedulePublic)
def pause_schedule(ref: str, tenant: TenantDep, settings: SettingsDep) -> SchedulePublic:
    """Stop firing until resumed (its jobs and runs stay)."""
    with transaction(settings) as s:
        return schedule_public(s, schedules.set_enabled(s, tenant, ref, False))


@router.post("/{ref}/resume", response_model=SchedulePublic)
def resume_schedule(ref: str, tenant: TenantDep, settings: SettingsDep) -> SchedulePublic:
    """Fire again from the next period on (periods missed while paused are not made up)."""
    with transaction(settings) as s:
        return schedule_public(s, schedules.set_enabled(s, tenant, ref, True))


@router.post("/{ref}/run", status_code=201, response_model=ScheduleRunPublic)
def run_schedule_now(ref: str, tenant: TenantDep, settings: SettingsDep) -> ScheduleRunPublic:
    """Fire now, outside the cron: a run of its own (its job, or the reason there is none)."""
    with unit_of_work(settings) as s:
        schedule = schedules.get_schedule(s, tenant, ref)
        firing = schedules.run_now(s, settings, schedule, "api")
        schedule_id = schedule.id
    if firing is None:  # two run-nows in the same microsecond
        raise Conflict("the schedule fired at this instant already; try again")
    with new_session(settings) as s:
        latest = schedules.latest_run(s, schedule_id)
    return _run_public(latest)


@router.get("/{ref}/runs/latest", response_model=ScheduleRunPublic)
def latest_schedule_run(ref: str, session: SessionDep, tenant: TenantDep) -> ScheduleRunPublic:
    """The most recent run: when it fired, its job and the job's status, or its error."""
    schedule = schedules.get_schedule(session, tenant, ref)
    latest = schedules.latest_run(session, schedule.id)
    if latest is None:
        raise NotFound(f"schedule {ref} has not run yet")
    return _run_public(latest)
