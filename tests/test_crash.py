"""Crash tests with real processes: a SIGKILLed worker, a restarted and a flushed Redis,
and killed database connections, each in the middle of a job of a few hundred documents.

The module runs its own broker (a private ``redis-server`` on a free port, so restarting
or flushing it touches nobody else), its own ``docbatch api`` and ``docbatch beat``
subprocesses pointed at it, and fake-handler workers (tests/fakes.py, a short sleep per
batch). Recovery leans on the reconciler with a short lease: workers heartbeat their
running unit every second, and a unit with no heartbeat for 4 s is republished.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from docbatch.processes import free_port
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import TERMINAL_JOB_STATUSES, Result, Unit
from tests.conftest import DB_NAME
from tests.fakeworkers import fake_worker_env
from tests.fixtures import ARTIFACTS, WorkerProcess, new_api_key, spawn
from tests.procs import RedisServer, terminate_backends

N_DOCS = 300


@pytest.fixture(scope="module")
def stack(database: str) -> Iterator[dict[str, Any]]:
    """Private Redis + `docbatch api` + `docbatch beat`; yields env, client and redis."""
    redis = RedisServer()
    redis.start()
    prefix = f"crash{secrets.token_hex(3)}"
    env = fake_worker_env(
        prefix,
        DOCBATCH_BROKER_URL=redis.url,
        DOCBATCH_FAKE_SLEEP="0.05",
        DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="4",
        DOCBATCH_UNIT_MAX_DOCUMENTS="20",
        DOCBATCH_RUNNING_LEASE_SECONDS="4",
        DOCBATCH_UNIT_HEARTBEAT_SECONDS="1",
        DOCBATCH_REQUEUE_AFTER_SECONDS="3",
        DOCBATCH_RECONCILE_INTERVAL_SECONDS="1",
    )
    port = free_port()
    api_proc = spawn(["api", "--port", str(port)], f"api-crash-{port}.log", env)
    beat = spawn(
        ["beat", "--schedule", str(ARTIFACTS / f"beat-{prefix}")], f"beat-{prefix}.log", env
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {new_api_key('default')}"},
        timeout=30,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert api_proc.poll() is None, (ARTIFACTS / f"api-crash-{port}.log").read_text()
        assert time.monotonic() < deadline, "docbatch api did not start"
        time.sleep(0.3)
    yield {"env": env, "client": client, "redis": redis}
    client.close()
    for proc in (api_proc, beat):
        proc.terminate()
        proc.wait(15)
    redis.stop()
    for leftover in ARTIFACTS.glob(f"beat-{prefix}*"):
        leftover.unlink()


def _submit(client: httpx.Client) -> str:
    docs = [{"custom_id": f"c{i:04d}", "text": f"crash test document {i}"} for i in range(N_DOCS)]
    resp = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _get(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """GET the job, riding out the moments the test itself breaks things."""
    for _ in range(50):
        try:
            resp = client.get(f"/v1/jobs/{job_id}")
            if resp.status_code == 200:
                return dict(resp.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the api stopped answering for job {job_id}")


def _wait(client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = _get(client, job_id)
        if job["status"] in TERMINAL_JOB_STATUSES:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['counts']}"
        time.sleep(0.3)


def _wait_mid_job(job_id: str, units_done: int = 2) -> None:
    """Until a few units are done and one is running: the job is in full flight."""
    deadline = time.monotonic() + 120
    while True:
        with new_session(get_settings()) as s:
            states = list(s.scalars(select(Unit.state).where(Unit.job_id == job_id)))
        if states.count("done") >= units_done and "running" in states:
            return
        assert "queued" in states or "running" in states, "the job ended before the crash"
        assert time.monotonic() < deadline, f"job not in flight: {states}"
        time.sleep(0.05)


def _assert_complete_exactly_once(job: dict[str, Any]) -> None:
    assert job["status"] == "completed", job
    counts = job["counts"]["summarize"]
    assert counts["succeeded"] == counts["total"] == N_DOCS, counts
    with new_session(get_settings()) as s:
        per_doc = s.execute(
            select(Result.document_id, func.count())
            .where(Result.job_id == job["id"])
            .group_by(Result.document_id)
        ).all()
        statuses = set(s.scalars(select(Result.status).where(Result.job_id == job["id"])))
    assert len(per_doc) == N_DOCS and {n for _, n in per_doc} == {1}
    assert statuses == {"succeeded"}


@pytest.fixture(scope="module")
def worker(stack: dict[str, Any]) -> Iterator[WorkerProcess]:
    """One worker for the broker and database crash tests (they do not kill it)."""
    proc = WorkerProcess("summarize", env=stack["env"], name="crash-shared")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def test_redis_restart_mid_job(stack, worker):
    client, redis = stack["client"], stack["redis"]
    job_id = _submit(client)
    _wait_mid_job(job_id)
    redis.stop()  # every queued and unacked message is gone (no persistence)
    time.sleep(1.0)
    redis.start()
    job = _wait(client, job_id)
    _assert_complete_exactly_once(job)


def test_redis_flushed_mid_job(stack, worker):
    client, redis = stack["client"], stack["redis"]
    job_id = _submit(client)
    _wait_mid_job(job_id)
    assert redis.cli("FLUSHALL") == "OK"
    job = _wait(client, job_id)
    _assert_complete_exactly_once(job)


def test_database_connections_killed_mid_job(stack, worker):
    client = stack["client"]
    log_before = len(worker.log)
    job_id = _submit(client)
    _wait_mid_job(job_id, units_done=1)

    def hit(log: str) -> bool:
        # the worker met a dead connection mid-work: a claim or write retried with
        # backoff, or its lease connection replaced (leases taken again)
        retried = "retry: Retry in" in log and "OperationalError" in log
        return retried or "lease connection replaced" in log

    # Kill every connection (claims, result writes, heartbeats, api reads) every 0.1 s for
    # at least 3 s, and on until the worker has met one mid-work (pooled connections
    # killed while idle are replaced silently by the pool's pre-ping: not a test of
    # anything), while the job still runs.
    killed, started = 0, time.monotonic()
    while time.monotonic() - started < 3 or not hit(worker.log[log_before:]):
        killed += terminate_backends(DB_NAME)
        time.sleep(0.1)
        ended = _get(client, job_id)["status"] in TERMINAL_JOB_STATUSES
        if ended or time.monotonic() - started > 30:
            break
    assert killed >= 5, "expected api and worker connections to kill"
    job = _wait(client, job_id)
    _assert_complete_exactly_once(job)
    log = worker.log[log_before:]
    assert hit(log), log[-2000:]


def test_sigkill_worker_mid_job_then_start_another(stack, worker):
    # runs last: the shared worker is stopped first so that only the one killed here and
    # its replacement serve the job
    worker.stop()
    client = stack["client"]
    first = WorkerProcess("summarize", env=stack["env"], name="crash-a").wait_ready()
    job_id = _submit(client)
    _wait_mid_job(job_id)
    running, deadline = None, time.monotonic() + 60
    while running is None:  # the unit computing (one claimed ahead has no attempt counted yet)
        assert time.monotonic() < deadline, "no unit computing"
        with new_session(get_settings()) as s:
            running = s.scalar(
                select(Unit.id).where(
                    Unit.job_id == job_id, Unit.state == "running", Unit.attempts > 0
                )
            )
    first.kill()  # parent and pool child: SIGKILL, no chance to ack or reject
    second = WorkerProcess("summarize", env=stack["env"], name="crash-b").wait_ready()
    try:
        job = _wait(client, job_id)
    finally:
        second.stop()
    _assert_complete_exactly_once(job)
    with new_session(get_settings()) as s:
        unit = s.get(Unit, running)
        assert unit is not None
    # the unit the killed worker held was taken over (republished after its lease)
    assert unit.state == "done" and unit.attempts == 2, (unit.state, unit.attempts)
