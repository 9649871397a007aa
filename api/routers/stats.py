"""/v1/jobs/{id}/throughput: documents finished over time (the dashboard's chart)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SessionDep, TenantDep
from domain import jobs
from domain.stats import throughput

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}/throughput")
def job_throughput(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    bucket: Annotated[int, Query(ge=1, le=86400)] = 10,
) -> dict[str, Any]:
    """Documents finished per ``bucket`` seconds, per task: ``{"bucket_seconds", "data"}``."""
    jobs.get_job(session, tenant, job_id)
    return {"bucket_seconds": bucket, "data": throughput(session, job_id, bucket)}
