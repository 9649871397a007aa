"""SIGTERM to a worker mid-unit (a rollout, a scale-in): the unit is given back at once and
another worker finishes it; the job completes with nothing lost and nothing written twice.

Real workers (the fake upper-casing handler at the model seam), Postgres and Redis. The
signal goes to the worker's main process only, as Kubernetes and Docker send it.
"""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy import func, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Result, Unit
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, wait_for_job


def _running_on(job_id: str, pids: list[int]) -> Unit | None:
    with new_session(get_settings()) as s:
        units = s.scalars(select(Unit).where(Unit.job_id == job_id, Unit.state == "running"))
        for unit in units:
            if unit.worker and int(unit.worker.rsplit(":", 1)[1]) in pids:
                return unit
    return None


def test_sigterm_mid_unit_gives_it_back_to_another_worker(api, private_queues, settings_override):
    settings_override.set(unit_max_documents="3")
    # One batch per document, 0.5 s each: a unit of three takes 1.5 s. No grace: the unit
    # in hand is given back as soon as the signal arrives.
    env = fake_worker_env(
        private_queues,
        sleep=0.5,
        DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="1",
        DOCBATCH_WORKER_SHUTDOWN_GRACE_SECONDS="0",
    )
    stopping = WorkerProcess("summarize", env=env, name="stopping").wait_ready()
    staying = WorkerProcess("summarize", env=env, name="staying").wait_ready()
    docs = [{"custom_id": f"d{i}", "text": f"text number {i}."} for i in range(24)]
    job_id = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()["id"]

    deadline = time.monotonic() + 60
    pids = stopping.children()
    while (unit := _running_on(job_id, pids)) is None:
        assert time.monotonic() < deadline, "the first worker never ran a unit"
        time.sleep(0.05)
    signalled = time.monotonic()
    os.kill(stopping.proc.pid, signal.SIGTERM)
    stopping.proc.wait(timeout=30)
    stopped_after = time.monotonic() - signalled
    job = wait_for_job(api, job_id, timeout=120)
    finished_after = time.monotonic() - signalled
    staying.stop()

    assert stopping.proc.returncode == 0, stopping.log[-2000:]
    assert "given back, this worker is stopping" in stopping.log, stopping.log[-3000:]
    # Taken over at once, not after the lease period (600 s in the tests).
    assert stopped_after < 15 and finished_after < 60, (stopped_after, finished_after)
    assert job["status"] == "completed", job
    counts = job["counts"]["summarize"]
    assert counts["succeeded"] == 24 and counts["failed"] == 0
    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Result.document_id, func.count())
            .where(Result.job_id == job_id)
            .group_by(Result.document_id)
        ).all()
        again = s.get(Unit, unit.id)
    assert len(rows) == 24 and all(n == 1 for _, n in rows)  # nothing lost, nothing twice
    assert again is not None and again.state == "done"
    # Finished by the other worker, the give-back's claim refunded (one attempt counted).
    assert again.worker is not None and int(again.worker.rsplit(":", 1)[1]) not in pids
    assert again.attempts == 1, again.attempts
