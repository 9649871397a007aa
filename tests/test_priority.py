"""Job priority inside one tenant, under fair dispatch (real Redis and a real worker; the
fake upper-casing handler at the model seam): 9 is the most urgent, a worker chaining
units takes an urgent unit already sent to the broker before the routine backlog, and a
message the reconciler sends again (Redis lost it) keeps its job's priority."""

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


def test_urgent_job_queued_later_is_consumed_first(api, private_queues, one_doc_units):
    routine = _submit(api, 0, "routine")
    urgent = _submit(api, 9, "urgent")
    order = _run_worker(api, private_queues, {routine: "r", urgent: "U"})
    # The routine units sent to the broker before the urgent job existed (at most
    # DOCBATCH_DISPATCH_DEPTH; the worker's first message names one) may go first; after
    # them every urgent unit, those the dispatcher sent as well as those the worker
    # chained from the backlog, then the rest of the routine job.
    head = len(order) - len(order.lstrip("r"))
    assert head <= get_settings().dispatch_depth, order
    assert order == "r" * head + "U" * UNITS + "r" * (UNITS - head), order


def test_republished_units_keep_their_job_priority(
    api, private_queues, one_doc_units, settings_override
):
    # A queue deep enough that both jobs' units are all sent at once...
    settings_override.set(dispatch_depth=str(2 * UNITS))
    routine = _submit(api, 0, "routine")
    urgent = _submit(api, 9, "urgent")
    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url)
    queue = settings.queue_for("summarize")
    lost = [key for key in broker.keys(f"{queue}*") if not key.startswith(b"_kombu")]
    assert lost and broker.delete(*lost)  # ...and then Redis loses every message
    with transaction(settings) as s:  # ...sent long enough ago for the reconciler to look
        aged = s.execute(
            update(Unit)
            .where(Unit.job_id.in_([routine, urgent]), Unit.dispatched_at.is_not(None))
            .values(dispatched_at=utcnow() - dt.timedelta(hours=1))
        ).rowcount
    assert aged == 2 * UNITS
    assert reconcile_once(settings) >= 2 * UNITS
    with new_session(settings) as s:
        fresh = s.scalar(
            select(func.count()).where(
                Unit.job_id.in_([routine, urgent]),
                Unit.dispatched_at > utcnow() - dt.timedelta(minutes=5),
            )
        )
    assert fresh == 2 * UNITS, "the reconciler sent every unit again"
    # It sends them in id order, the routine job's first: only the priority each message
    # carries (its job's) puts the urgent job first in the broker.
    order = _run_worker(api, private_queues, {routine: "r", urgent: "U"})
    assert order == "U" * UNITS + "r" * UNITS, order
