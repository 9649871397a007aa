"""/v1/usage/storage (what the tenant stores, what retention deletes next) and
/v1/jobs/{id}/storage (one job's, for the dashboard)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from docbatch.api.deps import SessionDep, SettingsDep, TenantDep
from docbatch.domain import jobs, usage

router = APIRouter(tags=["usage"])


@router.get("/v1/usage/storage")
def storage(session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """The tenant's documents, results, original file bytes (stored once per content),
    extracted text bytes, OpenAI files, its retention and the jobs retention deletes next."""
    return usage.tenant_storage(session, tenant, settings)


@router.get("/v1/jobs/{job_id}/storage")
def job_storage(
    job_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> dict[str, Any]:
    """One job's stored rows and bytes, and when retention deletes it (``expires_at``)."""
    return usage.job_storage(session, jobs.get_job(session, tenant, job_id), settings)
