"""The unit runner's chain of units (worker/runner.py, worker/pipeline.py): same results
as one unit at a time, exactly one result per document and task, and no unit lost or
doubled when a worker dies mid-chain."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time

import pytest
from sqlalchemy import func, select, text

from docbatch.domain import dispatch, jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Job, Result, Unit
from docbatch.worker.lease import Lease
from docbatch.worker.model_stage import ModelStage
from docbatch.worker.reconcile import reconcile_once
from docbatch.worker.runner import UnitRunner
from docbatch.worker.stage import Held
from tests.fakes import UpperHandler
from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.settings_env import override


def _settings(
    prefix: str, overlap: str = "auto", claim_ahead: bool = True, heartbeat: float = 10.0
) -> Settings:
    return get_settings().model_copy(
        update={
            "queue_prefix": prefix,
            "unit_max_documents": 4,
            "worker_overlap": overlap,
            "worker_claim_ahead": claim_ahead,
            "unit_heartbeat_seconds": heartbeat,
        }
    )


def _runner(handler: UpperHandler, settings: Settings) -> UnitRunner:
    return UnitRunner(ModelStage(handler, settings), settings)


def _handler() -> UpperHandler:
    handler = UpperHandler(get_settings().model_for("summarize"))
    handler.setup("cpu")
    return handler


def _create(settings: Settings, docs: list[dict]) -> tuple[str, list[int]]:
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


def _outputs(job_id: str) -> dict[str, tuple[str, object]]:
    from docbatch.schema.tables import Document

    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Document.custom_id, Result.status, Result.output)
            .join(Result, Result.document_id == Document.id)
            .where(Result.job_id == job_id)
        ).all()
        dupes = s.execute(
            select(Result.document_id)
            .where(Result.job_id == job_id)
            .group_by(Result.document_id, Result.task)
            .having(func.count() > 1)
        ).all()
    assert dupes == []
    return {r.custom_id: (r.status, r.output) for r in rows}


@pytest.mark.parametrize("overlap", ["threads", "inline"])
def test_pipelined_chain_matches_plain_path(overlap):
    """Claim-ahead and result writes on threads beside the model (a GPU's default), or
    one after the other in the task's thread (the CPU's): the same results either way."""
    from docbatch.worker.model_stage import overlaps

    docs = load_corpus("stdlib-docs.jsonl", 30)
    handler = _handler()
    settings = _settings(f"pipe-{secrets.token_hex(3)}", claim_ahead=False)
    plain_job, plain_units = _create(settings, docs)
    for unit_id in plain_units:
        assert _runner(handler, settings).run(unit_id) == "done"
    # A second job on another queue: one call runs the first unit and chains the rest.
    settings2 = _settings(f"pipe-{secrets.token_hex(3)}", overlap)
    assert overlaps(handler, settings2) is (overlap == "threads")
    assert overlaps(handler, _settings("x")) is False  # auto, on the CPU
    piped_job, piped_units = _create(settings2, docs)
    assert len(piped_units) > 3
    assert _runner(handler, settings2).run(piped_units[0]) == "done"
    with new_session(get_settings()) as s:
        states = s.scalars(select(Unit.state).where(Unit.job_id == piped_job)).all()
        job = s.get(Job, piped_job)
        assert job is not None
        assert job.status == "completed"
    assert set(states) == {"done"}
    plain, piped = _outputs(plain_job), _outputs(piped_job)
    assert len(piped) == len(docs)
    assert piped == plain
    # The messages of units run ahead arrive later: they are skipped, nothing doubles.
    for unit_id in piped_units[1:]:
        assert _runner(handler, settings2).run(unit_id) == "skipped"
    assert _outputs(piped_job) == piped


def _until_lease_gone(unit_id: int) -> None:
    """A closed connection's advisory locks go when its server process ends, a moment
    after the client closed it."""
    from docbatch.domain import leases
    from docbatch.schema.db import transaction

    deadline = time.monotonic() + 10
    while True:
        with transaction(get_settings()) as s:
            if not leases.held_elsewhere(s, unit_id):
                return
        assert time.monotonic() < deadline, f"unit {unit_id}'s lease outlived its connection"
        time.sleep(0.02)


class _ArrivingHandler(UpperHandler):
    """Creates another job, backlog only, as the chain computes the second unit of the
    first job, once the third is claimed ahead of it: the new job arrives after the pick
    of the unit the chain would start next."""

    def __init__(self, settings: Settings, first_job: str, arrival: dict) -> None:
        super().__init__(get_settings().model_for("summarize"))
        self.setup("cpu")
        self.settings, self.first_job, self.arrival = settings, first_job, arrival
        self.arrived: str | None = None
        self.calls = 0

    def _taken(self) -> int:
        with new_session(get_settings()) as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Unit)
                    .where(Unit.job_id == self.first_job, Unit.state != "queued")
                )
                or 0
            )

    def predict(self, chunks, params):
        self.calls += 1  # a unit of four short documents is one batch
        if self.calls == 2:
            deadline = time.monotonic() + 10
            while self._taken() < 3:  # on threads, the claim ahead runs beside us
                assert time.monotonic() < deadline, "the chain claimed nothing ahead"
                time.sleep(0.01)
            docs = [{"custom_id": f"b{i}", "text": f"arriving {i}"} for i in range(2)]
            with unit_of_work(self.settings, publish=False) as s:
                self.arrived = jobs.create_job(
                    s,
                    self.settings,
                    tasks=[{"type": "summarize"}],
                    documents=((d, None) for d in docs),
                    **self.arrival,
                ).job.id
        return super().predict(chunks, params)


@pytest.mark.parametrize("overlap", ["threads", "inline"])
@pytest.mark.parametrize(
    "arrival, overtakes",
    [
        ({"tenant": "other"}, True),  # another tenant: fair share
        ({"tenant": "default", "priority": 5}, True),  # priority inside a tenant
        ({"tenant": "default"}, False),  # the same tenant at one priority: its turn
    ],
    ids=["other-tenant", "more-urgent", "same-priority"],
)
def test_a_unit_arriving_behind_a_claimed_ahead_one_goes_first(overlap, arrival, overtakes):
    """Issue 22: a chain claims its next unit while one computes, so a job that arrives
    then used to wait for that unit too. The chain claims the arriving job's unit beside
    it and runs it first when the fair order puts it first (another tenant that was idle,
    or a more urgent job of the same tenant); the unit it passed runs right after, its
    attempt counted once. A job of the same tenant at the same priority waits its turn."""
    settings = _settings(f"over-{secrets.token_hex(3)}", overlap)
    first, units = _create(settings, [{"custom_id": f"a{i}", "text": f"a {i}"} for i in range(24)])
    assert len(units) == 6
    handler = _ArrivingHandler(settings, first, arrival)
    assert _runner(handler, settings).run(units[0]) == "done"
    assert handler.arrived is not None
    with new_session(get_settings()) as s:
        order = s.execute(
            select(Unit.job_id, Unit.id, Unit.attempts)
            .where(Unit.job_id.in_([first, handler.arrived]))
            .order_by(Unit.finished_at)
        ).all()
        states = set(s.scalars(select(Unit.state).where(Unit.job_id.in_([first, handler.arrived]))))
    assert states == {"done"}
    # The second unit computes as the job arrives; the third was claimed ahead of it.
    jobs_in_order = [job_id for job_id, _, _ in order]
    place = jobs_in_order.index(handler.arrived)
    assert place == 2 if overtakes else place >= 3, jobs_in_order  # then by size and age
    assert jobs_in_order.count(handler.arrived) == 1 and len(order) == 7
    assert {a for _, _, a in order} == {1}  # every unit charged once, the passed one too
    assert len(_outputs(first)) == 24 and len(_outputs(handler.arrived)) == 2


def test_unit_leased_by_a_live_worker_is_skipped_and_reclaimed_once_it_dies():
    from docbatch.worker.lease import Lease
    from docbatch.worker.stage import Verdict

    handler = _handler()
    settings = _settings(f"lease-{secrets.token_hex(3)}")
    job_id, units = _create(settings, load_corpus("stdlib-docs.jsonl", 3))
    unit_id = units[0]
    other = Lease(settings)  # another worker, alive: it claimed the unit ahead of its message
    assert isinstance(_runner(handler, settings).claim(other, unit_id), Held)
    assert _runner(handler, settings).run(unit_id) == Verdict.skipped
    other.close()  # the worker dies: its connection, and so its lease, goes
    _until_lease_gone(unit_id)
    assert _runner(handler, settings).run(unit_id) == Verdict.done
    with new_session(get_settings()) as s:
        unit = s.get(Unit, unit_id)
        assert unit is not None and unit.attempts == 2
    assert {v[0] for v in _outputs(job_id).values()} == {"succeeded"}


def _state(unit_id: int) -> tuple[str, int]:
    with new_session(get_settings()) as s:
        unit = s.get(Unit, unit_id)
        assert unit is not None
        return unit.state, unit.attempts


def test_a_unit_claimed_ahead_is_charged_its_attempt_only_once_it_computes():
    """Issue 22: a unit claimed ahead may never be computed (its worker dies on the unit
    computing beside it, or stops): until it starts computing it is charged nothing, so a
    worker-killing neighbour cannot use up its attempts; once it computes, the attempt
    counts, and a give-back refunds only what was counted."""
    from sqlalchemy import update

    from docbatch.schema.db import transaction
    from docbatch.worker.lease import Lease

    handler = _handler()
    settings = _settings(f"ahead-{secrets.token_hex(3)}", heartbeat=0.2)
    _, units = _create(settings, load_corpus("stdlib-docs.jsonl", 8))
    computed, spare = units[:2]
    with transaction(settings) as s:  # a worker died on it once already
        s.execute(update(Unit).where(Unit.id == spare).values(attempts=1))
    runner = _runner(handler, settings)
    lease = Lease(settings)
    try:
        held = runner.claim(lease, computed, attempt=False)
        ahead = runner.claim(lease, spare, attempt=False)
        assert isinstance(held, Held) and isinstance(ahead, Held)
        assert (_state(computed), _state(spare)) == (("running", 0), ("running", 1))
        out = runner.compute(lease, held)
        assert _state(computed) == ("running", 1)  # counted as it started
        runner.give_back(lease, spare)  # never started: nothing to refund
        assert _state(spare) == ("queued", 1)
        assert runner.finish(lease, held, out) == "done"
        assert _state(computed) == ("done", 1)
    finally:
        lease.close()
    dying = Lease(settings)  # claims the spare ahead, then dies before computing it
    assert isinstance(runner.claim(dying, spare, attempt=False), Held)
    dying.close()
    _until_lease_gone(spare)
    _until_taken_back(settings, spare)  # a top-up finds it orphaned, once it goes silent
    assert _state(spare) == ("queued", 1)  # the death was not its doing
    assert runner.run(spare) == "done"
    assert _state(spare) == ("done", 2)


def _until_taken_back(settings: Settings, unit_id: int) -> None:
    """Top-ups until one takes the unit back (queued again): its worker is gone."""
    deadline = time.monotonic() + 10
    while _state(unit_id)[0] == "running":
        assert time.monotonic() < deadline, f"unit {unit_id} was never taken back"
        with unit_of_work(settings, publish=False) as s:
            dispatch.top_up(s, settings, settings.queue_for("summarize"))
        time.sleep(0.05)


def _silent_for(unit_id: int, seconds: float) -> bool:
    """Has the unit been claimed longer than ``seconds`` ago (the database's clock)?"""
    with new_session(get_settings()) as s:
        unit = s.get(Unit, unit_id)
        assert unit is not None and unit.claimed_at is not None
        return bool(s.scalar(select(func.now() - unit.claimed_at)).total_seconds() > seconds)


def test_a_cut_database_connection_does_not_charge_the_unit_of_a_live_worker():
    """The chaos failure of seed 328486: every connection cut drops a live worker's lease
    too; a top-up then took the unit it was computing as lost, and each claim after it
    counted one more attempt, until the unit was given up as having killed its worker 3
    times. A live worker keeps heartbeating its unit: a lease lost while the heartbeat
    goes on is not a death, so nothing is taken back or charged."""
    from docbatch.schema.db import transaction
    from docbatch.worker.lease import Lease

    handler = _handler()
    settings = _settings(f"cut-{secrets.token_hex(3)}", heartbeat=0.2)
    _, units = _create(settings, load_corpus("stdlib-docs.jsonl", 4))
    runner = _runner(handler, settings)
    lease = Lease(settings)
    # A worker whose lease connection cannot be opened again (its heartbeats get
    # through): the lease stays gone (test_a_cut_lease_connection_... has it come back).
    lease.holdings.check = None
    try:
        held = runner.claim(lease, units[0])
        assert isinstance(held, Held) and _state(units[0]) == ("running", 1)
        pid = lease.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        lease.conn.rollback()
        with transaction(get_settings()) as s:  # the database cuts the lease connection
            assert s.scalar(select(func.pg_terminate_backend(pid)))
        _until_lease_gone(units[0])
        deadline = time.monotonic() + 10
        while not _silent_for(units[0], 3 * 0.2 + 0.5):  # past the silence, beating on
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with unit_of_work(settings, publish=False) as s:
            dispatch.top_up(s, settings, settings.queue_for("summarize"))
        assert _state(units[0]) == ("running", 1)  # not taken back: its worker lives
        out = runner.compute(lease, held)
        assert runner.finish(lease, held, out) == "done"
        assert _state(units[0]) == ("done", 1)
    finally:
        lease.close()


class _GatedHandler(UpperHandler):
    """Upper-cases, but its first batch signals ``started`` and waits for ``go``: the test
    acts while the unit is computing, on its progress rather than on a sleep."""

    def setup(self, device: str) -> None:
        super().setup(device)
        self.started, self.go = threading.Event(), threading.Event()

    def predict(self, chunks: list[str], params: dict) -> list:
        self.started.set()
        assert self.go.wait(60), "the test never let the batch go on"
        return super().predict(chunks, params)


def _lease_pids(unit_id: int) -> set[int]:
    """Backends holding the unit's lease (session-level advisory lock)."""
    from docbatch.domain.leases import lease_key

    ns, key = lease_key(unit_id)
    with new_session(get_settings()) as s:
        rows = s.execute(
            select(text("pid"))
            .select_from(text("pg_locks"))
            .where(
                text(
                    "locktype = 'advisory' AND granted AND classid = :ns "
                    "AND objid = CAST(CAST(:key AS bigint) AS oid) AND objsubid = 2"
                )
            ),
            {"ns": ns, "key": key},
        ).all()
    return {int(r[0]) for r in rows}


def _cut(lease: Lease) -> int:
    """Terminate the lease connection's server process (the database cuts it); its pid."""
    from docbatch.schema.db import transaction

    with lease.lock:
        pid = lease.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        lease.conn.rollback()
        with transaction(get_settings()) as s:
            assert s.scalar(select(func.pg_terminate_backend(pid)))
    return int(pid)


def _gated(prefix: str, heartbeat: float) -> tuple[_GatedHandler, Settings, list[int]]:
    handler = _GatedHandler(get_settings().model_for("summarize"))
    handler.setup("cpu")
    settings = _settings(f"{prefix}-{secrets.token_hex(3)}", heartbeat=heartbeat)
    _, units = _create(settings, load_corpus("stdlib-docs.jsonl", 4))
    return handler, settings, units


def test_a_cut_lease_connection_takes_its_leases_again_mid_unit():
    """Issue 25: a cut lease connection dropped the leases of the units its worker was
    still computing, and nothing took them again, so any other worker's claim read the
    unit as free for the rest of its computation. The worker's next heartbeat now finds
    the connection cut, opens a new one and takes every held unit's lease on it."""
    from docbatch.worker.lease import Lease
    from docbatch.worker.stage import Verdict

    handler, settings, units = _gated("release", heartbeat=0.2)
    runner = _runner(handler, settings)
    lease = Lease(settings)
    out: list[object] = []
    try:
        held = runner.claim(lease, units[0])
        assert isinstance(held, Held)
        computing = threading.Thread(target=lambda: out.append(runner.compute(lease, held)))
        computing.start()
        assert handler.started.wait(30), "the unit never started computing"
        old = _cut(lease)
        deadline = time.monotonic() + 10
        while not (_lease_pids(units[0]) - {old}):  # taken again, on a new connection
            assert time.monotonic() < deadline, "the cut lease was never taken again"
            time.sleep(0.02)
        assert lease.reconnects == 1
        # Another worker's claim (its message reached it meanwhile) sees the lease.
        assert _runner(handler, settings).run(units[0]) == Verdict.skipped
        assert _state(units[0]) == ("running", 1)
        handler.go.set()
        computing.join(30)
        assert out and runner.finish(lease, held, out[0]) == "done"
        assert _state(units[0]) == ("done", 1)
        assert not _lease_pids(units[0])
    finally:
        handler.go.set()
        lease.close()


def test_a_unit_claimed_elsewhere_while_the_lease_was_cut_is_stopped_not_written():
    """If another worker claimed the unit before the lease could be taken again, the
    unit is that worker's: this one stops computing it and writes nothing of it."""
    from docbatch.worker.lease import Lease

    handler, settings, units = _gated("lost", heartbeat=30)  # no beat during the test
    runner = _runner(handler, settings)
    lease, other = Lease(settings), Lease(settings)
    other_pids = {int(other.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())}
    other.conn.rollback()
    out: list[object] = []
    try:
        held = runner.claim(lease, units[0])
        assert isinstance(held, Held)
        computing = threading.Thread(target=lambda: out.append(runner.compute(lease, held)))
        computing.start()
        assert handler.started.wait(30), "the unit never started computing"
        old = _cut(lease)
        deadline = time.monotonic() + 10
        while old in _lease_pids(units[0]):
            assert time.monotonic() < deadline, "the cut connection's lease outlived it"
            time.sleep(0.02)
        taken = runner.claim(other, units[0])  # the lease read free: claimed again
        assert isinstance(taken, Held) and _state(units[0]) == ("running", 2)
        lease.keep()  # what the next heartbeat does: the lease is another's now
        assert lease.holdings.is_lost(units[0])
        handler.go.set()
        computing.join(30)
        assert out and runner.finish(lease, held, out[0]) == "superseded"
        assert _state(units[0]) == ("running", 2)  # nothing written, not given back
        assert _lease_pids(units[0]) == other_pids  # its lease is the other's alone
        assert runner.finish(other, taken, runner.compute(other, taken)) == "done"
        assert _state(units[0]) == ("done", 2)
    finally:
        handler.go.set()
        lease.close()
        other.close()
    outputs = _outputs(held.job_id)
    assert {v[0] for v in outputs.values()} == {"succeeded"}


def test_worker_killed_mid_chain_still_completes_every_document_once(api):
    prefix = f"crash-{secrets.token_hex(3)}"
    env = {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": "tests.fakes:UpperHandler",
        "DOCBATCH_FAKE_SLEEP": "0.3",
        "DOCBATCH_UNIT_HEARTBEAT_SECONDS": "0.3",
    }
    with override(queue_prefix=prefix, unit_max_documents="3"):
        docs = load_corpus("stdlib-docs.jsonl", 36)
        resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
    worker = WorkerProcess("summarize", env=env, name="pipelined-crash").wait_ready()
    try:
        # Let it chain a few units, then kill its pool process mid-chain.
        deadline = time.monotonic() + 120
        while api.get(f"/v1/jobs/{job_id}").json()["counts"]["summarize"]["succeeded"] < 6:
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.1)
        for child in worker.children():
            os.kill(child, signal.SIGKILL)
        # The beat's reconciler: the unit the dead process had claimed ahead is taken
        # back once it has gone unheartbeated for three heartbeats.
        beat = get_settings().model_copy(
            update={"queue_prefix": prefix, "unit_heartbeat_seconds": 0.3}
        )
        while api.get(f"/v1/jobs/{job_id}").json()["status"] == "running":
            assert time.monotonic() < deadline + 240, "the job never finished"
            reconcile_once(beat)
            time.sleep(0.5)
        job = wait_for_job(api, job_id, timeout=240)
    finally:
        worker.stop()
    assert job["status"] == "completed", job
    c = job["counts"]["summarize"]
    assert c["succeeded"] == c["total"] == len(docs)
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    assert [x["custom_id"] for x in lines] == [d["custom_id"] for d in docs]
    for line, doc in zip(lines, docs, strict=True):
        assert line["results"]["summarize"]["output"]["summary"] == doc["text"].upper()
    _outputs(job_id)  # exactly one result per document and task
