"""Work is never lost or stuck in the worker: every held unit heartbeats, a hung unit is
bounded by its time limit, a failed result write loses no other unit, a duplicate message
never runs a unit twice, the lease connection tells the server to drop a vanished host,
and a document that kills its worker fails alone (tests/test_failures.py).

Real Postgres, Redis and ``docbatch worker`` subprocesses with the fake handler
(tests/fakes.py) on private queues (tests/fakeworkers.py).
"""

from __future__ import annotations

import secrets
import time

import pytest
from sqlalchemy import select, text

from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Document, Result, Unit
from docbatch.worker.model_stage import ModelStage
from docbatch.worker.runner import UnitRunner
from tests.fakes import UpperHandler
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, wait_for_job


def _docs(n: int, special: dict[int, str] | None = None) -> list[dict[str, str]]:
    special = special or {}
    return [
        {"custom_id": f"d{i:04d}", "text": special.get(i, f"document number {i} says hello")}
        for i in range(n)
    ]


def _submit(api, docs: list[dict[str, str]]) -> str:
    resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _units(job_id: str) -> list[Unit]:
    with new_session(get_settings()) as s:
        return list(s.scalars(select(Unit).where(Unit.job_id == job_id).order_by(Unit.seq_lo)))


def _results_per_document(job_id: str) -> dict[str, tuple[str, str | None]]:
    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Document.custom_id, Result.status, Result.error)
            .join(Result, Result.document_id == Document.id)
            .where(Result.job_id == job_id)
        ).all()
    ids = [r.custom_id for r in rows]
    assert len(ids) == len(set(ids)), "a document has two results"
    return {r.custom_id: (r.status, r.error) for r in rows}


def _handler() -> UpperHandler:
    handler = UpperHandler(get_settings().model_for("summarize"))
    handler.setup("cpu")
    return handler


def _create(settings: Settings, docs: list[dict[str, str]]) -> tuple[str, list[int]]:
    """A job whose units this test runs itself (nothing is published)."""
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}],
            documents=((d, None) for d in docs),
        )
        return new.job.id, new.unit_ids


# -- heartbeats and time limits -----------------------------------------------------------


def test_units_claimed_ahead_heartbeat_while_they_wait(api, private_queues, limits):
    limits["UNIT_MAX_DOCUMENTS"] = "4"
    env = fake_worker_env(
        private_queues,
        DOCBATCH_FAKE_SLEEP="0.5",  # one chunk per batch: 2 s per unit
        DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="1",
        DOCBATCH_UNIT_HEARTBEAT_SECONDS="0.3",
    )
    worker = WorkerProcess("summarize", env=env, name="heartbeat-ahead").wait_ready()
    try:
        job_id = _submit(api, _docs(12))
        job = wait_for_job(api, job_id, timeout=120)
        deadline = time.monotonic() + 30  # the chain's line comes a moment after the job ends
        while "chain units=" not in worker.log and time.monotonic() < deadline:
            time.sleep(0.1)
        log = worker.log
    finally:
        worker.stop()
    assert job["status"] == "completed", job
    # the first task ran all three units (the others were claimed ahead while it ran):
    # each was heartbeated while held, not only the one its task's message named
    assert "ran 2 more units claimed ahead" in log, log[-3000:]
    assert [u.heartbeat_at is not None for u in _units(job_id)] == [True] * 3


def test_hung_unit_hits_its_time_limit_and_is_failed_after_max_attempts(
    api, private_queues, limits
):
    limits["UNIT_MAX_DOCUMENTS"] = "1"
    env = fake_worker_env(
        private_queues,
        DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS="2",
        DOCBATCH_UNIT_TIME_LIMIT_SECONDS_PER_1K_TOKENS="0",
        DOCBATCH_UNIT_HEARTBEAT_SECONDS="0.5",
    )
    worker = WorkerProcess("summarize", env=env, name="hang").wait_ready()
    try:
        job_id = _submit(api, _docs(3, {1: "this one HANGME forever"}))
        job = wait_for_job(api, job_id, timeout=180)
        log = worker.log
    finally:
        worker.stop()
    assert job["status"] == "completed_with_errors", job
    counts = job["counts"]["summarize"]
    assert (counts["succeeded"], counts["failed"], counts["total"]) == (2, 1, 3), counts
    results = _results_per_document(job_id)
    status, reason = results["d0001"]
    assert status == "failed"
    assert reason is not None and "time limit of 2 s" in reason, reason
    assert "DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS" in reason and "gave up after 3" in reason
    assert results["d0000"][0] == results["d0002"][0] == "succeeded"
    hung = [u for u in _units(job_id) if u.seq_lo == 1]
    assert [(u.state, u.attempts) for u in hung] == [("failed", 3)]
    assert log.count("replacing this worker process") >= 3, log[-3000:]


# -- result writes ------------------------------------------------------------------------


def test_a_refused_result_fails_its_document_and_the_chain_goes_on():
    settings = get_settings().model_copy(
        update={"queue_prefix": f"nul{secrets.token_hex(3)}", "unit_max_documents": 3}
    )
    docs = _docs(9, {1: "a NOTJSON summary"})
    job_id, units = _create(settings, docs)
    # one call runs the first unit (whose write is refused) and chains the other two
    assert UnitRunner(ModelStage(_handler(), settings), settings).run(units[0]) == "done"
    results = _results_per_document(job_id)
    assert len(results) == 9
    status, reason = results["d0001"]
    assert status == "failed" and reason and "could not be stored" in reason, reason
    assert all(v[0] == "succeeded" for k, v in results.items() if k != "d0001")
    assert [u.state for u in _units(job_id)] == ["done"] * 3


def test_a_result_that_can_never_be_stored_fails_its_document_once(api, private_queues, limits):
    """Issue 20 item 2: a write error that is not about the connection (here a numpy scalar
    the JSON encoder cannot write) counts the attempt and fails that document with the
    reason; the unit is not given back to be computed again, forever."""
    limits["UNIT_MAX_DOCUMENTS"] = "4"
    worker = WorkerProcess("summarize", env=fake_worker_env(private_queues), name="numpy")
    worker.wait_ready()
    try:
        job_id = _submit(api, _docs(8, {2: "a NUMPY score"}))
        job = wait_for_job(api, job_id, timeout=90)
        log = worker.log
    finally:
        worker.stop()
    assert job["status"] == "completed_with_errors", job
    counts = job["counts"]["summarize"]
    assert (counts["succeeded"], counts["failed"], counts["total"]) == (7, 1, 8), counts
    results = _results_per_document(job_id)
    status, reason = results["d0002"]
    assert status == "failed" and reason is not None, results["d0002"]
    assert "could not be stored" in reason and "float32" in reason, reason
    # each unit computed and written once: the refused write spent its attempt
    assert [(u.state, u.attempts) for u in _units(job_id)] == [("done", 1), ("done", 1)]
    assert log.count("its results were refused") == 1, log[-3000:]


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_keeps_writing_after_an_error_and_gives_the_unit_back(threaded):
    """A write that meets a transient error (here: the database drops the writer's
    connection) gives its unit back, attempt refunded; the next unit is still written."""
    from sqlalchemy import event

    from docbatch.schema.db import get_engine
    from docbatch.worker.lease import Lease
    from docbatch.worker.pipeline import Writer
    from docbatch.worker.stage import Held

    settings = get_settings().model_copy(
        update={"queue_prefix": f"wr{secrets.token_hex(3)}", "unit_max_documents": 2}
    )
    runner = UnitRunner(ModelStage(_handler(), settings), settings)
    job_id, (first, second) = _create(settings, _docs(4))
    lease = Lease(settings)
    engine = get_engine(settings)
    cut = {"armed": True}

    def drop_connection(conn, cursor, statement, *_):  # the first results insert only
        if cut["armed"] and statement.lstrip().upper().startswith("INSERT INTO RESULTS"):
            cut["armed"] = False
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    event.listen(engine, "before_cursor_execute", drop_connection)
    try:
        claimed = [runner.claim(lease, u) for u in (first, second)]
        assert all(isinstance(c, Held) for c in claimed)
        outcomes = [runner.compute(lease, c) for c in claimed]  # type: ignore[arg-type]
        writer = Writer(runner, lease, threaded=threaded)
        writer.put(claimed[0], outcomes[0])  # this write loses its connection
        writer.put(claimed[1], outcomes[1])
        error = writer.close()
    finally:
        event.remove(engine, "before_cursor_execute", drop_connection)
        lease.close()
    assert error is not None  # reported, so the task retries
    by_id = {u.id: u for u in _units(job_id)}
    assert by_id[second].state == "done"  # written although an earlier write failed
    # the unit whose write failed went back through the ledger: queued, no attempt used
    assert (by_id[first].state, by_id[first].attempts) == ("queued", 0)


# -- leases -------------------------------------------------------------------------------


def test_duplicate_messages_with_claim_ahead_off_never_run_a_unit_twice(
    api, private_queues, limits
):
    from docbatch.domain.publish import publish_prioritized

    limits["UNIT_MAX_DOCUMENTS"] = "4"
    env = fake_worker_env(
        private_queues,
        DOCBATCH_WORKER_CLAIM_AHEAD="false",
        DOCBATCH_FAKE_SLEEP="0.5",  # 2 s per unit
        DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="1",
    )
    workers = [WorkerProcess("summarize", env=env, name=f"dup-{i}").wait_ready() for i in range(2)]
    try:
        # both pool processes must have their model loaded, or the idle one takes the
        # duplicate only after the unit is done
        deadline = time.monotonic() + 120
        while not all("(summarize) model" in w.log for w in workers):
            assert time.monotonic() < deadline, "a worker never loaded its model"
            time.sleep(0.2)
        job_id = _submit(api, _docs(4))
        (unit,) = _units(job_id)
        deadline = time.monotonic() + 60
        while _units(job_id)[0].state != "running":
            assert time.monotonic() < deadline, "the unit never started"
            time.sleep(0.05)
        # the idle worker takes a duplicate while the unit runs; more follow
        publish_prioritized([(unit.id, unit.queue, 0)] * 3, get_settings())
        job = wait_for_job(api, job_id, timeout=120)
        time.sleep(1.0)  # let the last duplicates arrive and be skipped
    finally:
        for w in workers:
            w.stop()
    assert job["status"] == "completed", job
    (unit,) = _units(job_id)
    assert (unit.state, unit.attempts) == ("done", 1)
    assert {v[0] for v in _results_per_document(job_id).values()} == {"succeeded"}


def test_lease_connection_has_server_keepalives_within_the_lease(limits):
    from docbatch.worker.lease import Lease

    limits["RUNNING_LEASE_SECONDS"] = "40"
    lease = Lease(get_settings())
    try:
        with lease.lock:
            shown = {
                name: lease.conn.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "tcp_keepalives_idle",
                    "tcp_keepalives_interval",
                    "tcp_keepalives_count",
                    "tcp_user_timeout",
                )
            }
            lease.conn.commit()
    finally:
        lease.close()
    # silent for 20 s, then 4 probes 5 s apart: a vanished host is dropped (and its
    # advisory locks freed) about 40 s after it went quiet, not after two hours
    assert shown == {
        "tcp_keepalives_idle": "20",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "4",
        "tcp_user_timeout": "40000",
    }, shown
