"""The fault run: one job through every stage while its workers are SIGKILLed, Redis is
flushed and the database drops every connection, at moments a seed draws.

The job holds real files (PDF, DOCX, HTML, an e-mail with a PDF attached, a zip of more,
long PDFs that keep the extract stage busy, and three broken files) and asks for two
model tasks: summarize (the upper-casing fake, tests/fakes.py) and embed (the bundled
MiniLM). It runs on a database and a redis-server of its own, with `docbatch api`,
`docbatch beat` (the reconciler every second, a 4 s lease) and one worker per stage.
The seed draws each fault's moment (after how many units closed) and manner (the pool
process running the unit, or the whole worker, then a new one); a fault fires on what
the database shows (a unit of that stage running), never on a sleep:

- the extract worker killed while it holds an extract unit;
- a model worker (summarize or embed) killed while it holds a unit;
- Redis flushed (every queued and unacked message gone);
- every database connection terminated, several times in a row.

Then: the job ends, every good file succeeds on every task, every broken file fails alone
with its reason, no document is lost or has two results for a task, the counts add up,
and the large objects in Postgres are exactly those the rows reference.

The seed is printed and written to test-artifacts/chaos.log; replay one with
``DOCBATCH_CHAOS_SEED=N``; ``DOCBATCH_CHAOS_RUNS=K`` runs K fresh seeds (``make chaos``).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from docbatch.schema.tables import (
    EXTRACT,
    TERMINAL_JOB_STATUSES,
    Document,
    DocumentFile,
    Result,
    StoredFile,
    Unit,
)
from tests.conftest import ADMIN_URL, DB_NAME
from tests.fakeworkers import FAKE
from tests.files import HTML, PAGES, make_docx, make_email, make_long_pdf, make_pdf, make_zip
from tests.fixtures import ARTIFACTS, WorkerProcess, spawn, stop_process
from tests.procs import ApiProcess, RedisServer, terminate_backends

T = TypeVar("T")
CHAOS_DB = f"{DB_NAME}_chaos"
TASKS = ("summarize", "embed")
BROKEN = {
    "corrupt.pdf": "damaged",
    "empty.pdf": "empty (0 bytes)",
    "blob.bin": "unsupported file type",
}


def _seeds() -> list[int]:
    if os.environ.get("DOCBATCH_CHAOS_SEED"):
        return [int(os.environ["DOCBATCH_CHAOS_SEED"])]
    runs = int(os.environ.get("DOCBATCH_CHAOS_RUNS", "1"))
    return [secrets.randbelow(10**6) for _ in range(runs)]


def _retry(fn: Callable[[], T], attempts: int = 100) -> T:
    """``fn()``, riding out the moments this test itself cuts the connections."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except (DBAPIError, httpx.HTTPError):
            time.sleep(0.1)
    return fn()


@dataclass
class Stack:
    env: dict[str, str]
    db: Engine
    api: ApiProcess
    redis: RedisServer
    workers: list[WorkerProcess] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(database: str) -> Iterator[Stack]:
    """A database, a redis-server, `docbatch api` and `docbatch beat` of the run's own."""
    from sqlalchemy.engine import make_url

    from docbatch.schema.migrate import upgrade

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{CHAOS_DB}"'))
    url = make_url(ADMIN_URL).set(database=CHAOS_DB).render_as_string(hide_password=False)
    upgrade(url)
    redis = RedisServer()
    redis.start()
    prefix = f"chaos{secrets.token_hex(3)}"
    env = {
        "DOCBATCH_DATABASE_URL": url,
        "DOCBATCH_BROKER_URL": redis.url,
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE,
        "DOCBATCH_FAKE_SLEEP": "0.05",
        "DOCBATCH_UNIT_MAX_DOCUMENTS": "2",
        "DOCBATCH_EXTRACT_UNIT_FILES": "2",
        "DOCBATCH_RUNNING_LEASE_SECONDS": "4",
        "DOCBATCH_UNIT_HEARTBEAT_SECONDS": "1",
        "DOCBATCH_REQUEUE_AFTER_SECONDS": "3",
        "DOCBATCH_RECONCILE_INTERVAL_SECONDS": "1",
    }
    api = ApiProcess(env, migrate=False).wait_ready()
    beat = spawn(
        ["beat", "--schedule", str(ARTIFACTS / f"beat-{prefix}")], f"beat-{prefix}.log", env
    )
    db = create_engine(url, pool_pre_ping=True)
    try:
        yield Stack(env, db, api, redis)
    finally:
        stop_process(beat)
        api.stop()
        db.dispose()
        redis.stop()
        for leftover in ARTIFACTS.glob(f"beat-{prefix}*"):
            leftover.unlink()
        terminate_backends(CHAOS_DB)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{CHAOS_DB}"'))
        admin.dispose()


def _files(rng: random.Random) -> list[tuple[str, bytes]]:
    tag = str(rng.random())  # unique bytes per run: nothing is reused from an earlier one
    pdf = make_pdf(PAGES, title=tag)
    long_text = "A short page about sockets, bytes and files. "
    files = [
        ("report.pdf", pdf),
        ("notes.docx", make_docx(title=tag)),
        ("page.html", HTML.replace("<head>", f'<head><meta name="run" content="{tag}">').encode()),
        ("mail.eml", make_email(make_pdf(PAGES[:1], title=tag + "attached"))),
        (
            "bundle.zip",
            make_zip(
                {
                    "a.pdf": make_pdf(PAGES[2:], title=tag + "zip"),
                    "b.txt": f"Plain text in a zip, {tag}.".encode(),
                    "c.html": HTML.encode(),
                }
            ),
        ),
        ("corrupt.pdf", pdf[:400]),
        ("empty.pdf", b""),
        ("blob.bin", bytes(range(256)) * 8 + tag.encode()),
    ]
    # Long PDFs: each keeps an extract worker busy for a moment (and the models too).
    files += [
        (f"long-{i}.pdf", make_long_pdf(1500, long_text) + f"%{tag}{i}\n".encode())
        for i in range(3)
    ]
    rng.shuffle(files)
    return files


GOOD = {
    "report.pdf",
    "notes.docx",
    "page.html",
    "mail.eml",
    "mail.eml/report.pdf",
    "bundle.zip/a.pdf",
    "bundle.zip/b.txt",
    "bundle.zip/c.html",
    "long-0.pdf",
    "long-1.pdf",
    "long-2.pdf",
}


@dataclass
class Fault:
    """One fault: ``after`` units closed (of ``stage``'s, or of all for None), then fire."""

    name: str
    after: int
    stage: str | None = None
    whole: bool = False  # a kill: the whole worker (else only the pool process)
    passes: int = 0  # a database cut: pg_terminate_backend passes, 0.1 s apart
    report: str = ""

    def __str__(self) -> str:
        return f"{self.name}({self.report or 'not reached: the job ended first'})"


def _draw(rng: random.Random) -> list[Fault]:
    model = rng.choice(TASKS)
    return [
        Fault("kill-extract", rng.randint(0, 1), EXTRACT, whole=rng.random() < 0.5),
        Fault(f"kill-{model}", rng.randint(0, 3), model, whole=rng.random() < 0.5),
        Fault("flush-redis", rng.randint(1, 6)),
        Fault("cut-db", rng.randint(1, 8), passes=rng.randint(5, 20)),
    ]


class Run:
    """One seed's job and its workers."""

    def __init__(self, stack: Stack, seed: int) -> None:
        self.stack = stack
        self.seed = seed
        self.rng = random.Random(seed)
        self.workers: dict[str, WorkerProcess] = {}
        self.started = time.monotonic()

    def start(self, stage: str) -> WorkerProcess:
        worker = WorkerProcess(stage, env=self.stack.env, name=f"chaos-{self.seed}-{stage}")
        self.workers[stage] = worker
        self.stack.workers.append(worker)
        return worker

    def units(self, job_id: str) -> list[tuple[str, str, str | None]]:
        def read() -> list[tuple[str, str, str | None]]:
            with Session(self.stack.db) as s:
                rows = s.execute(
                    select(Unit.task, Unit.state, Unit.worker).where(Unit.job_id == job_id)
                ).all()
            return [(r.task, r.state, r.worker) for r in rows]

        return _retry(read)

    def fire(self, fault: Fault, units: list[tuple[str, str, str | None]]) -> bool:
        closed = [t for t, state, _ in units if state in ("done", "failed", "cancelled")]
        if fault.stage is None:
            if len(closed) < fault.after:
                return False
            if fault.name == "flush-redis":
                assert self.stack.redis.cli("FLUSHALL") == "OK"
                fault.report = f"after {len(closed)} units closed"
            else:
                cut = 0
                for _ in range(fault.passes):
                    cut += terminate_backends(CHAOS_DB)
                    time.sleep(0.1)
                fault.report = f"{fault.passes} passes, {cut} connections, after {len(closed)}"
            return True
        if closed.count(fault.stage) < fault.after:
            return False
        running = [w for t, state, w in units if t == fault.stage and state == "running" and w]
        if not running:
            return False
        worker = self.workers[fault.stage]
        pid = int(running[0].rsplit(":", 1)[1])
        if pid not in worker.children():
            return False  # a claim in flight from a process that is already gone
        if fault.whole:
            worker.kill()  # parent and pool: the reconciler takes the unit back
            self.start(fault.stage)
            fault.report = f"whole worker, pid {pid} mid-unit"
        else:
            os.kill(pid, signal.SIGKILL)  # the parent redelivers at once
            fault.report = f"pool process {pid} mid-unit"
        return True


@pytest.mark.parametrize("seed", _seeds())
def test_a_job_survives_random_faults_across_every_stage(stack: Stack, seed: int) -> None:
    print(f"\nchaos seed={seed} (replay: DOCBATCH_CHAOS_SEED={seed})", flush=True)
    line = f"chaos seed={seed}: did not start"
    run = Run(stack, seed)
    for stage in (EXTRACT, *TASKS):
        run.start(stage)
    for worker in run.workers.values():
        worker.wait_ready()
    faults = _draw(run.rng)
    files = _files(run.rng)
    from docbatch.domain.tenants import create_key

    with Session(stack.db) as s, s.begin():
        key = create_key(s, f"chaos-{seed}").key
    client = httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    try:
        resp = client.post(
            "/v1/jobs",
            files=[("file", (name, data)) for name, data in files],
            data={"tasks": ",".join(TASKS)},
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        job = _run_faults(run, client, job_id, faults)
        line = (
            f"chaos seed={seed}: {job['status']} in {time.monotonic() - run.started:.0f} s; "
            + "; ".join(str(f) for f in faults)
        )
        _check(stack, client, job, files)
    except BaseException as exc:
        line = f"chaos seed={seed}: FAILED ({type(exc).__name__}: {str(exc)[:200]}); " + "; ".join(
            str(f) for f in faults
        )
        raise
    finally:
        print(line, flush=True)
        ARTIFACTS.mkdir(exist_ok=True)
        with (ARTIFACTS / "chaos.log").open("a") as fh:
            fh.write(line + "\n")
        client.close()
        for worker in run.workers.values():
            worker.stop()


def _run_faults(run: Run, client: httpx.Client, job_id: str, faults: list[Fault]) -> dict:
    pending = list(faults)
    deadline = time.monotonic() + 360
    while True:
        job = _retry(lambda: client.get(f"/v1/jobs/{job_id}").raise_for_status().json())
        if job["status"] in TERMINAL_JOB_STATUSES:
            return dict(job)
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['counts']}"
        units = run.units(job_id)
        for fault in list(pending):
            if run.fire(fault, units):
                pending.remove(fault)
                units = run.units(job_id)
        time.sleep(0.02)


def _check(stack: Stack, client: httpx.Client, job: dict[str, Any], files: list) -> None:
    assert job["status"] == "completed_with_errors", job
    tasks = {EXTRACT, *TASKS}
    assert set(job["counts"]) == tasks
    for task, c in job["counts"].items():
        assert c["succeeded"] + c["failed"] == c["total"] == job["documents"], (task, c)
        assert c["cancelled"] == 0, (task, c)
    body = _retry(lambda: client.get(f"/v1/jobs/{job['id']}/results").raise_for_status().text)
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    results = {line["custom_id"]: line["results"] for line in lines}
    assert len(results) == len(lines) == job["documents"], "a document is listed twice"
    assert set(results) == GOOD | set(BROKEN), sorted(results)
    for name in GOOD:
        for task in tasks:
            assert results[name][task]["status"] == "succeeded", (name, task, results[name])
    summary = results["report.pdf"]["summarize"]["output"]["summary"]
    assert PAGES[1].upper().split(".")[0] in summary
    for name, reason in BROKEN.items():
        extract = results[name][EXTRACT]
        assert extract["status"] == "failed" and reason in extract["error"], (name, extract)
        for task in TASKS:
            got = results[name][task]
            assert got["status"] == "failed", (name, task, got)
            assert got["error"].startswith("extraction failed: ") and reason in got["error"]

    def rows() -> tuple[list, int, int, set[int], set[int]]:
        with Session(stack.db) as s:
            twice = s.execute(
                select(Result.document_id, Result.task)
                .where(Result.job_id == job["id"])
                .group_by(Result.document_id, Result.task)
                .having(func.count() > 1)
            ).all()
            documents = s.scalar(select(func.count()).where(Document.job_id == job["id"]))
            results = s.scalar(select(func.count()).where(Result.job_id == job["id"]))
            objects = set(s.scalars(text("SELECT oid::bigint FROM pg_largeobject_metadata")))
            referenced = set(
                s.scalars(select(DocumentFile.blob_oid).where(DocumentFile.blob_oid.isnot(None)))
            ) | set(s.scalars(select(StoredFile.blob_oid).where(StoredFile.blob_oid.isnot(None))))
            open_units = s.scalar(
                select(func.count()).where(
                    Unit.job_id == job["id"], Unit.state.in_(("queued", "running", "waiting"))
                )
            )
        assert open_units == 0
        return twice, int(documents or 0), int(results or 0), objects, referenced

    twice, documents, result_rows, objects, referenced = _retry(rows)
    assert twice == [], f"documents with two results for a task: {twice}"
    assert documents == job["documents"] and result_rows == documents * len(tasks)
    assert objects == referenced, (
        f"large objects no row references: {sorted(objects - referenced)}; "
        f"rows naming a missing one: {sorted(referenced - objects)}"
    )
