"""Job priority reaches the broker the right way round (real Redis and a real worker; the
fake upper-casing handler at the model seam): 9 is the most urgent, and a message the
reconciler republishes keeps its job's priority."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from sqlalchemy import func, select, update

from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Unit, utcnow
from docbatch.worker.reconcile import reconcile_once
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, wait_for_job
from tests.settings_env import Overrides

UNITS = 6


@pytest.fixture
def one_doc_units(settings_override: Overrides) -> None:
    settings_override.set(unit_max_documents="1")


def _submit(api, priority: int, tag: str) -> str:  # noqa: ANN001
    docs = [{"custom_id": f"{tag}-{i}", "text": f"document {tag} {i}."} for i in range(UNITS)]
    resp = api.post(
        "/v1/jobs", json={"tasks": ["summarize"], "documents": docs, "priority": priority}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _claim_order(jobs: dict[str, str]) -> str:
    """One letter per unit (its job's), in the order the worker claimed them."""
    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Unit.job_id).where(Unit.job_id.in_(jobs)).order_by(Unit.claimed_at, Unit.id)
        ).all()
    return "".join(jobs[r.job_id] for r in rows)


def _run_worker(api, prefix: str, jobs: dict[str, str]) -> str:  # noqa: ANN001
    worker = WorkerProcess("summarize", env=fake_worker_env(prefix, sleep=0.05)).wait_ready()
    try:
        for job_id in jobs:
            assert wait_for_job(api, job_id, timeout=120)["status"] == "completed"
    finally:
        worker.stop()
    return _claim_order(jobs)


@pytest.mark.xfail(
    reason="known bug, open since fair dispatch: a worker chaining units takes the backlog "
    "before units already sent to the broker, so an urgent unit sent early can run after the "
    "routine backlog ('rUUUUUrrrrrU'); fix: next_units orders sent and backlog units together",
    strict=False,
)
def test_urgent_job_queued_later_is_consumed_first(api, private_queues, one_doc_units):
    routine = _submit(api, 0, "routine")
    urgent = _submit(api, 9, "urgent")
    order = _run_worker(api, private_queues, {routine: "r", urgent: "U"})
    assert order == "U" * UNITS + "r" * UNITS


@pytest.mark.xfail(
    reason="written for publish-at-submit: under fair dispatch a job's units wait in Postgres "
    "and only DOCBATCH_DISPATCH_DEPTH are in Redis, so deleting messages and ageing "
    "published_at no longer makes the reconciler resend a job's units; to be rewritten "
    "around dispatched_at",
    strict=False,
)
def test_republished_units_keep_their_job_priority(api, private_queues, one_doc_units):
    settings = get_settings()
    routine = _submit(api, 0, "routine")
    broker = redis.Redis.from_url(settings.broker_url)
    queue = settings.queue_for("summarize")
    lost = [key for key in broker.keys(f"{queue}*") if not key.startswith(b"_kombu")]
    assert lost and broker.delete(*lost)  # the routine job's messages are gone
    with transaction(get_settings()) as s:  # ...long enough ago for the reconciler to look
        s.execute(
            update(Unit)
            .where(Unit.job_id == routine)
            .values(published_at=utcnow() - dt.timedelta(hours=1))
        )
    urgent = _submit(api, 9, "urgent")
    assert reconcile_once(get_settings()) >= UNITS
    with new_session(get_settings()) as s:
        fresh = s.scalar(
            select(func.count()).where(
                Unit.job_id == routine, Unit.published_at > utcnow() - dt.timedelta(minutes=5)
            )
        )
    assert fresh == UNITS, "the reconciler republished the routine job's units"
    order = _run_worker(api, private_queues, {routine: "r", urgent: "U"})
    assert order == "U" * UNITS + "r" * UNITS
