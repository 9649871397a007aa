"""Cancelling a job: a cancel racing the last unit, and a big job cancelled off the request
path (real Postgres, Redis and worker processes; the fake upper-casing handler at the model
seam)."""

from __future__ import annotations

import re
import threading
import time

from sqlalchemy import func, select, text

from docbatch.domain import jobs, ledger
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.retry import RetryPolicy
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, Unit, WebhookDelivery
from docbatch.worker.model_stage import compute_unit
from tests.fakes import UpperHandler
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess


def _wait_until_blocked_on_a_lock(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with new_session(get_settings()) as s:
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


def test_cancel_racing_the_last_unit_leaves_the_job_completed(private_queues):
    """The worker closing the last unit holds the job lock while cancel reads the job:
    once the worker commits, cancel must see `completed` and change nothing."""
    settings = get_settings()
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}],
            documents=[({"custom_id": f"d{i}", "text": f"text {i}."}, None) for i in range(2)],
            webhook_url="https://hooks.example.com/docbatch",
        )
        job_id, (unit_id,) = new.job.id, new.unit_ids
    handler = UpperHandler(settings.model_for("summarize"))
    handler.setup("cpu")
    with unit_of_work(settings, publish=False) as s:
        claim = ledger.claim_unit(s, unit_id, "racer", RetryPolicy.of(settings))
        assert claim is not None
        documents, params = claim.documents, claim.params
    outcome = compute_unit(
        handler, documents, params, lambda: False, job_id=job_id, unit_id=unit_id
    )

    cancel_pid: list[int] = []
    cancel_error: list[BaseException] = []

    def cancel() -> None:
        try:
            with unit_of_work(settings) as s:
                cancel_pid.append(int(s.scalar(text("SELECT pg_backend_pid()"))))
                jobs.cancel_job(s, "default", job_id)
        except BaseException as exc:  # reported by the test below
            cancel_error.append(exc)

    # The worker's write, as docbatch.worker.runner.UnitRunner.finish does it, held open at
    # the end (its webhook is not sent: no one listens).
    with unit_of_work(settings, publish=False) as worker:
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

    with new_session(get_settings()) as s:
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


BIG = 20_000
BATCH = 500


def _ledger_snapshot(job_id: str) -> tuple[dict[str, int], dict[str, int], int]:
    """The job's counters, its result rows by status and its document count, read in one
    statement (one snapshot)."""
    with new_session(get_settings()) as s:
        row = s.execute(
            text(
                "SELECT t.succeeded, t.failed, t.cancelled, t.total,"
                " (SELECT count(*) FROM results r WHERE r.job_id = :j AND r.status = 'succeeded'),"
                " (SELECT count(*) FROM results r WHERE r.job_id = :j AND r.status = 'failed'),"
                " (SELECT count(*) FROM results r WHERE r.job_id = :j AND r.status = 'cancelled'),"
                " (SELECT count(DISTINCT r.document_id) FROM results r WHERE r.job_id = :j)"
                " FROM job_tasks t WHERE t.job_id = :j"
            ),
            {"j": job_id},
        ).one()
    counters = {"succeeded": row[0], "failed": row[1], "cancelled": row[2], "total": row[3]}
    rows = {"succeeded": row[4], "failed": row[5], "cancelled": row[6]}
    return counters, rows, int(row[7])


def test_cancel_of_a_big_job_returns_at_once_and_finishes_in_batches(
    api, private_queues, settings_override
):
    settings_override.set(unit_max_documents="10")
    env = fake_worker_env(private_queues, sleep=0.3, DOCBATCH_CANCEL_BATCH_DOCUMENTS=str(BATCH))
    worker = WorkerProcess("summarize", env=env).wait_ready()
    try:
        docs = [{"custom_id": f"d{i}", "text": f"document number {i}."} for i in range(BIG)]
        resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 120
        while api.get(f"/v1/jobs/{job_id}").json()["counts"]["summarize"]["succeeded"] == 0:
            assert time.monotonic() < deadline, "no unit finished"
            time.sleep(0.1)

        started = time.monotonic()
        cancel = api.post(f"/v1/jobs/{job_id}/cancel")
        took = time.monotonic() - started
        assert cancel.status_code == 200, cancel.text
        at_once = cancel.json()
        print(f"cancel of a {BIG}-document job answered in {took:.3f} s")
        assert at_once["status"] == "cancelling"
        assert at_once["counts"]["summarize"]["pending"] > BIG // 2, (
            "the cancelled rows are written after the response, not in it"
        )
        assert took < 5.0, f"cancel took {took:.1f} s"

        # While the rows follow in batches, the counters always match the result rows
        # (a unit finishing meanwhile counted once).
        seen = 0
        deadline = time.monotonic() + 300
        while True:
            job = api.get(f"/v1/jobs/{job_id}").json()
            counters, rows, distinct = _ledger_snapshot(job_id)
            assert {k: counters[k] for k in rows} == rows, (counters, rows)
            assert distinct == sum(rows.values()) <= BIG
            done = rows["succeeded"] + rows["cancelled"]
            assert done >= seen, "counts never go back"
            seen = done
            if job["status"] == "cancelled":
                break
            assert job["status"] == "cancelling", job
            assert time.monotonic() < deadline, f"still {job['status']}: {job['counts']}"
            time.sleep(0.05)
    finally:
        worker.stop()
    c = job["counts"]["summarize"]
    assert c["succeeded"] >= 1 and c["failed"] == 0 and c["pending"] == 0
    assert c["succeeded"] + c["cancelled"] == BIG
    counters, rows, distinct = _ledger_snapshot(job_id)
    assert distinct == BIG and rows["succeeded"] == c["succeeded"]
    with new_session(get_settings()) as s:
        open_units = s.scalar(
            select(func.count()).where(Unit.job_id == job_id, Unit.state.in_(["queued", "running"]))
        )
    assert open_units == 0
    batches = [
        int(n)
        for n in re.findall(rf"{job_id}: cancelled \d+ queued units in (\d+) batches", worker.log)
    ]
    assert batches and max(batches) >= 2, worker.log[-2000:]


def test_a_lost_cancel_is_sent_again_by_the_reconciler(private_queues):
    """The api's cancel message never arrived: the reconciler sends it again, and the
    sweep it runs closes every queued unit in batches and ends the job."""
    import json

    import redis

    from docbatch.api.metrics import priority_queue_names
    from docbatch.worker.cancel import sweep
    from docbatch.worker.reconcile import reconcile_once

    settings = get_settings()
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings.model_copy(update={"unit_max_documents": 3}),
            tenant="default",
            tasks=[{"type": "summarize"}, {"type": "tags"}],
            documents=[({"custom_id": f"d{i}", "text": f"text {i}."}, None) for i in range(30)],
        )
        job_id = new.job.id
    with unit_of_work(settings) as s:
        assert jobs.cancel_job(s, "default", job_id).status == "cancelling"
    broker = redis.Redis.from_url(settings.broker_url)
    keys = priority_queue_names(settings.maintenance_queue)
    broker.delete(*keys)  # the api's message is lost
    reconcile_once(settings)
    sent = [json.loads(m) for key in keys for m in broker.lrange(key, 0, -1)]
    assert any(
        m["headers"]["task"] == "docbatch.cancel_job" and job_id in m["headers"]["argsrepr"]
        for m in sent
    ), sent
    assert sweep(job_id, settings.model_copy(update={"cancel_batch_documents": 7})) == 20
    with new_session(get_settings()) as s:
        row = s.get(Job, job_id)
        assert row is not None
        public = jobs.job_public(s, row)
    assert public.status == "cancelled"
    for counts in public.counts.values():
        assert (counts.cancelled, counts.pending) == (30, 0)
    assert sweep(job_id, settings) == 0, "a second sweep finds nothing to do"


def test_a_cancelling_job_with_only_waiting_units_is_swept_again(private_queues):
    """Issue 20 item 3: the api's cancel message is lost while the job's extract unit runs
    on a live worker, so its model units still wait for their files and none is queued.
    The reconciler sends the sweep again; it closes the waiting units at once, and the
    job ends when the extract unit closes."""
    import io
    import json

    import redis

    from docbatch.api.metrics import priority_queue_names
    from docbatch.domain.files import FileDocument
    from docbatch.worker.cancel import sweep
    from docbatch.worker.lease import Lease
    from docbatch.worker.reconcile import reconcile_once
    from tests.files import PAGES, make_pdf

    settings = get_settings()
    pdf = make_pdf(PAGES, title="waiting")
    files = [(FileDocument(f"f{i}.pdf", len(pdf), lambda: io.BytesIO(pdf)), None) for i in range(3)]
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s, settings, tenant="default", tasks=[{"type": "summarize"}], documents=files
        )
        job_id, (extract_unit,) = new.job.id, new.unit_ids
    worker = Lease(settings)  # a live extract worker, in the middle of the unit
    try:
        assert worker.acquire(extract_unit)
        with worker.transaction() as s:
            assert ledger.claim_unit(s, extract_unit, "extractor", RetryPolicy.of(settings))
        with unit_of_work(settings) as s:
            assert jobs.cancel_job(s, "default", job_id).status == "cancelling"
        broker = redis.Redis.from_url(settings.broker_url)
        keys = priority_queue_names(settings.maintenance_queue)
        broker.delete(*keys)  # the api's message is lost
        with new_session(get_settings()) as s:
            states = set(s.scalars(select(Unit.state).where(Unit.job_id == job_id)))
        assert states == {"running", "waiting"}
        reconcile_once(settings)
        sent = [json.loads(m) for key in keys for m in broker.lrange(key, 0, -1)]
        assert any(
            m["headers"]["task"] == "docbatch.cancel_job" and job_id in m["headers"]["argsrepr"]
            for m in sent
        ), sent
        assert sweep(job_id, settings) == 1  # the waiting summarize unit
        with unit_of_work(settings) as s:  # the extract worker stops at its next check
            job = ledger.lock_job(s, job_id)
            unit = s.get(Unit, extract_unit)
            assert unit is not None
            ledger.close_unit(s, unit, ledger.UnitState.cancelled, reason="job cancelled")
            ledger.finalize_job_if_done(s, job)
    finally:
        worker.close()
    with new_session(get_settings()) as s:
        row = s.get(Job, job_id)
        assert row is not None
        public = jobs.job_public(s, row)
    assert public.status == "cancelled"
    for counts in public.counts.values():
        assert (counts.cancelled, counts.pending) == (3, 0), public.counts


def test_the_sweep_counts_a_backlog_exactly_whatever_its_results_already(private_queues):
    """The sweep fills and counts one unit at a time (each as cheap as a unit's close,
    whatever the job's size): a queued unit that already holds a result (a reused one,
    written by a claim that was then given back) keeps it and is counted with it."""
    from docbatch.schema.tables import Document, JobTask, Result

    settings = get_settings().model_copy(update={"unit_max_documents": 4})
    docs = [({"custom_id": f"s{i}", "text": f"sweep document {i}."}, None) for i in range(40)]
    with unit_of_work(settings, publish=False) as s:
        job_id = jobs.create_job(
            s, settings, tenant="default", tasks=[{"type": "summarize"}], documents=docs
        ).job.id
    with unit_of_work(settings, publish=False) as s:
        doc = s.scalar(select(Document).where(Document.job_id == job_id, Document.seq == 5))
        s.add(
            Result(
                job_id=job_id,
                document_id=doc.id,
                task="summarize",
                status="succeeded",
                output={"summary": "copied"},
                reused=True,
            )
        )
        s.get(Job, job_id).status = "cancelling"
    batches = 0
    more = True
    while more:
        with unit_of_work(settings, publish=False) as s:
            _, more = jobs.cancel_queued_batch(s, job_id, 12)  # three units a batch
        batches += 1
        counters, rows, _ = _ledger_snapshot(job_id)
        assert {k: counters[k] for k in rows} == rows  # exact after every batch
    assert batches == 4
    counters, rows, distinct = _ledger_snapshot(job_id)
    assert (rows["succeeded"], rows["cancelled"], distinct) == (1, 39, 40)
    with new_session(get_settings()) as s:
        assert s.get(Job, job_id).status == "cancelled"
        assert s.get(JobTask, (job_id, "summarize")).reused == 1
        open_units = s.scalar(
            select(func.count()).where(Unit.job_id == job_id, Unit.state != "cancelled")
        )
    assert open_units == 0
