"""/v1/jobs/{id}/throughput: documents finished over time (the dashboard's chart)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from docbatch.api.deps import SessionDep, TenantDep
from docbatch.domain import jobs
from docbatch.domain.stats import auto_window, progress, throughput

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}/throughput")
def job_throughput(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    bucket: Annotated[int, Query(ge=1, le=86400)] = 10,
    window: Annotated[int, Query(ge=0, le=86400)] = 0,
) -> dict[str, Any]:
    """Documents finished per ``bucket`` seconds, per task (``data``), and the same as
    cumulative progress with a rate smoothed over ``window`` seconds (``progress``;
    ``window=0``: several buckets, at least 30 s). See ``docbatch.domain.stats.progress``."""
    jobs.get_job(session, tenant, job_id)
    data = throughput(session, job_id, bucket)
    window = window or auto_window(bucket)
    return {
        "bucket_seconds": bucket,
        "window_seconds": window,
        "data": data,
        "progress": progress(data, bucket, window),
    }
