"""/v1/schedules: recurring jobs over a source (create, list, get, delete)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from sqlalchemy.orm import Session

from docbatch.api.deps import SessionDep, SettingsDep, TenantDep
from docbatch.domain import schedules
from docbatch.schema.db import transaction
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
        next_run_at=schedules.next_fire(schedule.cron, utcnow()),
        runs=[
            ScheduleRunPublic(
                period_start=r.period_start,
                fired_at=r.fired_at,
                job_id=r.job_id,
                job_status=r.status,
                error=r.error,
            )
            for r in recent
        ],
    )


@router.post("", status_code=201, response_model=SchedulePublic)
def create_schedule(
    tenant: TenantDep, settings: SettingsDep, body: Annotated[dict[str, Any], Body()]
) -> SchedulePublic:
    """``{"name", "cron": "0 2 * * *", "source": {"type": "folder", "path", "pattern"?},
    "tasks": [...], "reuse_results"?: true, "enabled"?: true}``; cron is UTC."""
    with transaction() as s:
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
def delete_schedule(ref: str, tenant: TenantDep) -> Response:
    """Stop a schedule; the jobs it already made stay."""
    with transaction() as s:
        schedules.delete_schedule(s, tenant, ref)
    return Response(status_code=204)
