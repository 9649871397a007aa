"""Liveness and readiness.

Both are unauthenticated (load balancers and compose healthchecks call them), so they
say only which component is up or down; the reason goes to the api's log.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from docbatch.api.deps import SettingsDep
from docbatch.domain.broker import app as celery_app
from docbatch.schema.db import get_engine
from docbatch.schema.settings import Settings

router = APIRouter(tags=["health"])
log = logging.getLogger("docbatch.api.health")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(settings: Settings) -> bool:
    try:
        with get_engine(settings).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means not ready; the reason is logged
        log.exception("readiness: the database does not answer")
        return False


def _check_broker() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # any failure means not ready; the reason is logged
        log.exception("readiness: the broker does not answer")
        return False


@router.get("/readyz")
async def readyz(settings: SettingsDep) -> JSONResponse:
    """Ready when Postgres and the broker answer; 503 naming the component that does not
    (``{"status": "unavailable", "checks": {"database": "down", "broker": "ok"}}``)."""
    db, broker = (
        await run_in_threadpool(_check_database, settings),
        await run_in_threadpool(_check_broker),
    )
    checks = {"database": "ok" if db else "down", "broker": "ok" if broker else "down"}
    ok = db and broker
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
