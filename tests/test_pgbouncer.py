"""docbatch behind a real PgBouncer in transaction mode (docs/scaling.md).

The module starts its own ``pgbouncer`` (Debian's 1.18, unpacked into the venv by
ops/pgbouncer/install-pgbouncer.sh; `make test` does it) on a free port, in transaction
mode with a small pool, in front of the run's database. The api, the beat, the
maintenance process and the model workers reach Postgres through it
(DOCBATCH_DATABASE_URL); the connections that hold session-level advisory locks (the
workers' leases and claims, the cancel sweep's and the delete's per-job locks) go direct
(DOCBATCH_LEASE_DATABASE_URL). A job completes; a worker SIGKILLed mid-unit has its unit
taken back at once (its lease vanished with its direct connection, and the pooled side
sees that in pg_locks); a cancel ends ``cancelled`` with exact counts. The first test
shows why the leases must not go through the pooler: a lock taken there outlives the
client that took it.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from docbatch.processes import free_port
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import TERMINAL_JOB_STATUSES, Document, Result, Unit
from tests.conftest import ADMIN_URL, DB_NAME
from tests.fakeworkers import fake_worker_env
from tests.fixtures import ARTIFACTS, WorkerProcess, _processes, new_api_key, spawn, stop_process
from tests.procs import ApiProcess

POOL_SIZE = 3  # server connections per database/user: far fewer than the clients
SEARCH = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin"]
)
PGBOUNCER = shutil.which("pgbouncer", path=SEARCH)

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None,
    reason="pgbouncer is not installed: `make test` unpacks Debian's into the venv "
    "(ops/pgbouncer/install-pgbouncer.sh, needs apt-get), or put pgbouncer on PATH",
)


class PgBouncer:
    """A private pgbouncer (transaction mode, POOL_SIZE server connections) in front of
    the run's database, with its own ini and auth_file in ``folder``."""

    def __init__(self) -> None:
        # Its own folder, not pytest's (0700 and root's when the tests run as root):
        # pgbouncer refuses to run as root, so there it drops to ``nobody`` (-u), which
        # must read its ini and auth_file.
        folder = Path(tempfile.mkdtemp(prefix="docbatch-pgbouncer-"))
        self.folder = folder
        server = make_url(ADMIN_URL)
        self.user = server.username or "postgres"
        self.port = free_port()
        password = server.password or ""
        (folder / "userlist.txt").write_text(f'"{self.user}" "{password}"\n')
        target = f"host={server.host or '127.0.0.1'} port={server.port or 5432} dbname={DB_NAME}"
        self.log = ARTIFACTS / f"pgbouncer-{self.port}.log"
        ARTIFACTS.mkdir(exist_ok=True)
        (folder / "pgbouncer.ini").write_text(
            f"""[databases]
{DB_NAME} = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
admin_users = {self.user}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
reserve_pool_size = 0
max_client_conn = 500
"""
        )
        switch: list[str] = []
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (folder, *folder.iterdir()):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            switch = ["-u", "nobody"]
        with self.log.open("ab") as log:  # pgbouncer logs to stderr
            self.proc = subprocess.Popen(
                [str(PGBOUNCER), *switch, str(folder / "pgbouncer.ini")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _processes.append(self.proc)  # stopped however the session ends
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin("SHOW VERSION")
                break
            except psycopg.OperationalError:
                assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.1)
        url = make_url(ADMIN_URL).set(host="127.0.0.1", port=self.port, database=DB_NAME)
        self.url = url.render_as_string(hide_password=False)

    def admin(self, command: str) -> list[dict[str, Any]]:
        """A command on pgbouncer's admin console (simple query protocol only)."""
        conninfo = f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={self.user}"
        with (
            psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as c,
            c.cursor() as cur,
        ):
            cur.execute(command)
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def ours(self, command: str) -> list[dict[str, Any]]:
        return [r for r in self.admin(command) if r.get("database") == DB_NAME]

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(database: str) -> Iterator[PgBouncer]:
    b = PgBouncer()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def stack(bouncer: PgBouncer) -> Iterator[dict[str, Any]]:
    """The api, the beat and the maintenance process through pgbouncer, on private
    queues; yields the workers' env and an api client."""
    prefix = f"bounce{secrets.token_hex(3)}"
    env = fake_worker_env(
        prefix,
        DOCBATCH_DATABASE_URL=bouncer.url,
        DOCBATCH_LEASE_DATABASE_URL=get_settings().database_url,  # direct
        DOCBATCH_FAKE_SLEEP="0.1",
        DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="2",
        DOCBATCH_UNIT_MAX_DOCUMENTS="10",
        DOCBATCH_UNIT_HEARTBEAT_SECONDS="0.5",
        # Only a vanished lease (and three missed heartbeats) brings a running unit back
        # within the tests' time: a lost message is resent after 10 minutes.
        DOCBATCH_RUNNING_LEASE_SECONDS="600",
        DOCBATCH_RECONCILE_INTERVAL_SECONDS="1",
        # A cancel's queued units are closed by the maintenance sweep, a unit per
        # transaction under its per-job session lock, not inline by the api.
        DOCBATCH_CANCEL_BATCH_DOCUMENTS="10",
    )
    api = ApiProcess(env, migrate=False)
    beat = spawn(
        ["beat", "--schedule", str(ARTIFACTS / f"beat-{prefix}")], f"beat-{prefix}.log", env
    )
    upkeep_log = f"maintenance-{prefix}.log"
    upkeep = spawn(["maintenance", "--concurrency", "1", "--loglevel", "INFO"], upkeep_log, env)
    api.wait_ready()
    client = httpx.Client(
        base_url=api.url,
        headers={"Authorization": f"Bearer {new_api_key('default')}"},
        timeout=30,
    )
    try:
        yield {"env": env, "client": client, "maintenance_log": ARTIFACTS / upkeep_log}
    finally:
        client.close()
        for proc in (beat, upkeep):
            stop_process(proc)
        api.stop()
        for leftover in ARTIFACTS.glob(f"beat-{prefix}*"):
            leftover.unlink()


def _submit(client: httpx.Client, n: int, tag: str) -> str:
    docs = [{"custom_id": f"{tag}{i:03d}", "text": f"{tag} document {i}"} for i in range(n)]
    resp = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _wait(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL_JOB_STATUSES:
            return dict(job)
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['counts']}"
        time.sleep(0.2)


def _units(job_id: str) -> list[Unit]:
    with new_session(get_settings()) as s:
        return list(s.scalars(select(Unit).where(Unit.job_id == job_id).order_by(Unit.seq_lo)))


def _computing(job_id: str, units_done: int, timeout: float = 120) -> Unit:
    """Once ``units_done`` units are done: the unit being computed (attempt counted)."""
    deadline = time.monotonic() + timeout
    while True:
        units = _units(job_id)
        running = [u for u in units if u.state == "running" and u.attempts > 0]
        if sum(u.state == "done" for u in units) >= units_done and running:
            return running[0]
        assert time.monotonic() < deadline, [(u.state, u.attempts) for u in units]
        time.sleep(0.05)


def _statuses(job_id: str) -> dict[str, int]:
    """Result rows by status, one per document at most (a second row fails the test)."""
    with new_session(get_settings()) as s:
        per_doc = s.execute(
            select(Result.document_id, func.count())
            .where(Result.job_id == job_id)
            .group_by(Result.document_id, Result.task)
        ).all()
        assert {n for _, n in per_doc} <= {1}, "a document has two results"
        rows = s.execute(
            select(Result.status, func.count())
            .where(Result.job_id == job_id)
            .group_by(Result.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


def test_a_session_lock_taken_through_the_pooler_outlives_its_client(bouncer):
    # Why the leases go direct: a worker's lease taken through transaction-mode pgbouncer
    # stays on a server connection after the worker is gone (a dead worker's unit would
    # look alive for ever); taken on a direct connection it goes with the connection.
    key = secrets.randbelow(2**31)
    held = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = 1 AND objid = CAST(:key AS bigint)::oid AND objsubid = 2"
    )
    direct = create_engine(get_settings().database_url, isolation_level="AUTOCOMMIT")
    pooled = create_engine(
        bouncer.url, isolation_level="AUTOCOMMIT", connect_args={"prepare_threshold": None}
    )
    try:
        for engine, outlives in ((pooled, True), (direct, False)):
            conn = engine.connect()
            assert conn.execute(text("SELECT pg_try_advisory_lock(1, :key)"), {"key": key}).scalar()
            conn.invalidate()  # the client's connection closes: a worker SIGKILLed
            conn.close()
            deadline = time.monotonic() + 5
            with direct.connect() as look:
                while (n := look.execute(held, {"key": key}).scalar()) and not outlives:
                    assert time.monotonic() < deadline, "the direct session's lock stayed"
                    time.sleep(0.05)
            assert n == (1 if outlives else 0), (engine.url, n)
            key += 1
    finally:
        pooled.dispose()
        direct.dispose()
    # the lock taken through pgbouncer is on one of its pooled server connections (stopping
    # pgbouncer at the end of the module closes them)


def test_job_completes_through_pgbouncer_with_direct_leases(bouncer, stack):
    client = stack["client"]
    worker = WorkerProcess("summarize", env=stack["env"], name="bounced").wait_ready()
    try:
        xacts_before = sum(r["total_xact_count"] for r in bouncer.ours("SHOW STATS"))
        job_id = _submit(client, 40, "ok")
        job = _wait(client, job_id)
        # How many clients the stack keeps open at this moment varies with the timing; a
        # few more held open here make "more clients than server connections" certain,
        # each having run a transaction through the pool.
        extra = create_engine(
            bouncer.url, poolclass=NullPool, connect_args={"prepare_threshold": None}
        )
        held = [extra.connect() for _ in range(POOL_SIZE + 1)]
        for conn in held:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            conn.commit()
        clients = len(bouncer.ours("SHOW CLIENTS"))
        servers = len(bouncer.ours("SHOW SERVERS"))
        for conn in held:
            conn.close()
        extra.dispose()
        with new_session(get_settings()) as s:
            leases = s.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'docbatch-worker:summarize'"
                )
            ).scalar()
    finally:
        worker.stop()
    assert job["status"] == "completed", job
    counts = job["counts"]["summarize"]
    assert counts["succeeded"] == counts["total"] == 40, counts
    assert _statuses(job_id) == {"succeeded": 40}
    assert {u.state for u in _units(job_id)} == {"done"}
    lines = client.get(f"/v1/jobs/{job_id}/results").text.splitlines()
    assert len(lines) == 40 and "OK DOCUMENT 7" in "\n".join(lines)
    # the pooled side really went through pgbouncer, many clients on a few server
    # connections; the worker's lease connection went straight to Postgres
    assert sum(r["total_xact_count"] for r in bouncer.ours("SHOW STATS")) - xacts_before > 100
    assert servers <= POOL_SIZE < clients, (servers, clients)
    assert leases and leases >= 1


def test_sigkilled_worker_unit_is_taken_back_at_once_through_pgbouncer(stack):
    client = stack["client"]
    first = WorkerProcess("summarize", env=stack["env"], name="bounced-a").wait_ready()
    second = None
    try:
        job_id = _submit(client, 60, "kill")
        unit = _computing(job_id, units_done=1)
        first.kill()  # parent and pool child: SIGKILL; the lease connection dies with it
        killed_at = time.monotonic()
        # Back to the queue, its attempt counted, by the reconciler's top-up through
        # pgbouncer, which reads the vanished lease in pg_locks: within seconds (three
        # missed heartbeats, 1.5 s, and a reconciler pass), not the 10-minute lease.
        while True:
            back = next(u for u in _units(job_id) if u.id == unit.id)
            if back.state == "queued":
                break
            assert back.state == "running", back.state
            assert time.monotonic() - killed_at < 30, "the killed worker's unit stayed running"
            time.sleep(0.1)
        taken_back_after = time.monotonic() - killed_at
        second = WorkerProcess("summarize", env=stack["env"], name="bounced-b").wait_ready()
        job = _wait(client, job_id)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert taken_back_after < 15, taken_back_after
    assert job["status"] == "completed", job
    counts = job["counts"]["summarize"]
    assert counts["succeeded"] == counts["total"] == 60, counts
    assert _statuses(job_id) == {"succeeded": 60}
    done = next(u for u in _units(job_id) if u.id == unit.id)
    assert (done.state, done.attempts) == ("done", 2)


def test_cancel_through_pgbouncer_ends_cancelled_with_exact_counts(stack):
    client = stack["client"]
    worker = WorkerProcess("summarize", env=stack["env"], name="bounced-cancel").wait_ready()
    try:
        job_id = _submit(client, 80, "cancel")
        _computing(job_id, units_done=1)
        resp = client.post(f"/v1/jobs/{job_id}/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] in ("cancelling", "cancelled")
        job = _wait(client, job_id, timeout=60)
    finally:
        worker.stop()
    assert job["status"] == "cancelled", job
    counts = job["counts"]["summarize"]
    statuses = _statuses(job_id)
    assert counts["total"] == job["documents"] == 80
    assert counts["failed"] == 0 and "failed" not in statuses
    assert counts["succeeded"] == statuses.get("succeeded", 0) >= 10  # a unit was done
    assert counts["cancelled"] == statuses.get("cancelled", 0) > 0
    assert counts["succeeded"] + counts["cancelled"] == 80
    units = _units(job_id)
    assert {u.state for u in units} <= {"done", "cancelled"}
    # the sweep (on the maintenance queue, its per-job lock held on a direct connection
    # across its batches) closed the units that had not started, in several transactions
    assert any(u.state == "cancelled" and u.attempts == 0 for u in units)
    logs = stack["maintenance_log"].read_text(errors="replace") + worker.log
    swept = re.search(rf"{job_id}: cancelled (\d+) queued units in (\d+) batches", logs)
    assert swept and int(swept[2]) >= 2, logs[-3000:]
    with new_session(get_settings()) as s:
        documents = s.scalar(select(func.count()).where(Document.job_id == job_id))
    assert documents == 80
