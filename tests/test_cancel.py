"""Cancelling a job: a cancel racing the last unit, and a big job cancelled off the request
path (real Postgres, Redis and worker processes; the fake upper-casing handler at the model
seam)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, text

from schema import jobs, ledger
from schema.db import new_session, transaction
from schema.settings import get_settings
from schema.tables import Job, Unit, WebhookDelivery
from tests.fakes import UpperHandler
from worker.runner import compute_unit


def _wait_until_blocked_on_a_lock(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with new_session() as s:
        while time.monotonic() < deadline:
            waiting = s.scalar(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            )
            s.rollback()  # a fresh snapshot of pg_stat_activity next time
            if waiting == "Lock":
                return
            time.sleep(0.02)
    raise TimeoutError(f"backend {pid} never waited on a lock")


def test_cancel_racing_the_last_unit_leaves_the_job_completed(own_queues):
    """The worker closing the last unit holds the job lock while cancel reads the job:
    once the worker commits, cancel must see `completed` and change nothing."""
    settings = get_settings()
    with transaction() as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}],
            documents=[({"custom_id": f"d{i}", "text": f"text {i}."}, None) for i in range(2)],
            webhook_url="https://hooks.example.com/docbatch",
        )
        job_id, (unit_id, _queue) = new.job.id, new.units[0]
    handler = UpperHandler(settings.model_for("summarize"))
    handler.setup("cpu")
    with transaction() as s:
        claim = ledger.claim_unit(s, unit_id, "racer", settings.max_unit_attempts)
        assert claim is not None
        documents, params = claim.documents, claim.params
    outcome = compute_unit(
        handler, documents, params, lambda: False, job_id=job_id, unit_id=unit_id
    )

    cancel_pid: list[int] = []
    cancel_error: list[BaseException] = []

    def cancel() -> None:
        try:
            with transaction() as s:
                cancel_pid.append(int(s.scalar(text("SELECT pg_backend_pid()"))))
                jobs.cancel_job(s, "default", job_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            cancel_error.append(exc)

    # The worker's write, as worker.runner.write_outcome does it, held open at the end.
    with transaction() as worker:
        job = ledger.lock_job(worker, job_id)
        unit = worker.get(Unit, unit_id)
        assert unit is not None
        ledger.write_results(worker, outcome.rows)
        ledger.close_unit(worker, unit, ledger.UnitState.done)
        assert ledger.finalize_job_if_done(worker, job)
        assert job.status == "completed"
        finished_at = job.finished_at
        racer = threading.Thread(target=cancel)
        racer.start()
        deadline = time.monotonic() + 20
        while not cancel_pid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cancel_pid, cancel_error
        _wait_until_blocked_on_a_lock(cancel_pid[0])  # cancel has read the job, now waits
    racer.join(30)
    assert not racer.is_alive() and not cancel_error, cancel_error

    with new_session() as s:
        row = s.get(Job, job_id)
        assert row is not None
        public = jobs.job_public(s, row)
        events = s.scalars(
            select(WebhookDelivery.event).where(WebhookDelivery.job_id == job_id)
        ).all()
    assert public.status == "completed", public
    counts = public.counts["summarize"]
    assert (counts.succeeded, counts.cancelled) == (2, 0)
    assert list(events) == ["job.completed"], "exactly one terminal webhook"
    assert public.finished_at == finished_at, "finished_at must not be overwritten"
