"""The commands docker-compose.yml runs, as plain processes, and their /metrics.

- ``docbatch api --migrate`` on an empty database: waits, migrates, serves /readyz.
- ``docbatch api`` + ``docbatch worker`` after a job: the api's queue depth shows the
  queued units (a job of files' in the extract queue too), then both /metrics moved by
  exactly the documents processed.
- ``docbatch beat``: publishes the reconciler on its schedule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import redis as redis_lib
from kombu.transport.redis import Channel
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from docbatch.domain.broker import broker_priority
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import EXTRACT, Unit
from tests.conftest import ADMIN_URL, DATABASE_URL, RUN_ID, servers
from tests.files import PAGES, make_pdf
from tests.fixtures import ROOT, WorkerProcess, load_corpus, new_api_key, spawn, stop_process
from tests.procs import ApiProcess, free_port, log_tail

FAKE = "tests.fakes:UpperHandler"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    resp = httpx.get(url, timeout=15)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _poll(fetch: Any, ok: Any, timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if ok(last):
            return last
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout}s; last {last}")


@pytest.fixture
def fresh_database() -> Any:
    """An empty database (no tables) for the migrate-on-start check; dropped after."""
    name = f"docbatch_test_{RUN_ID}_fresh"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def test_api_migrate_creates_the_tables_then_serves(fresh_database):
    api = ApiProcess({"DOCBATCH_DATABASE_URL": fresh_database}, migrate=True).wait_ready()
    try:
        ready = httpx.get(f"{api.url}/readyz", timeout=10).json()
        assert ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        engine = create_engine(fresh_database)
        try:
            tables = set(inspect(engine).get_table_names())
            with engine.connect() as conn:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        finally:
            engine.dispose()
        assert {"jobs", "job_tasks", "documents", "units", "results"} <= tables
        assert revision
        # And it serves the API on that database, to a key made there with the CLI.
        assert httpx.get(f"{api.url}/v1/jobs", timeout=10).status_code == 401
        created = subprocess.run(
            [sys.executable, "-m", "docbatch.cli", "keys", "create", "--tenant", "fresh"],
            cwd=ROOT,
            env={**os.environ, "DOCBATCH_DATABASE_URL": fresh_database},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = created.stdout.split()[0]
        listed = httpx.get(
            f"{api.url}/v1/jobs", timeout=10, headers={"Authorization": f"Bearer {key}"}
        )
        assert listed.status_code == 200 and listed.json()["count"] == 0
    finally:
        api.stop()


def test_metrics_after_a_job():
    prefix = f"metrics{RUN_ID}"
    queues = {"DOCBATCH_QUEUE_PREFIX": prefix}
    api = ApiProcess(queues).wait_ready()
    auth = {"Authorization": f"Bearer {new_api_key('default')}"}
    worker: WorkerProcess | None = None
    try:
        metrics_url = f"{api.url}/metrics"
        before = scrape(metrics_url)
        docs = load_corpus("stdlib-docs.jsonl", 60)
        resp = httpx.post(
            f"{api.url}/v1/jobs",
            json={"tasks": [{"type": "summarize"}], "documents": docs},
            timeout=60,
            headers=auth,
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        with new_session(get_settings()) as s:
            units = s.query(Unit).filter(Unit.job_id == job_id).count()
        assert units >= 2  # 60 documents at DOCBATCH_UNIT_TOKENS=8192
        # A job of files waits in the extract queue first; no extract worker runs here.
        pdf = make_pdf(PAGES, title=f"metrics {RUN_ID}")  # unique: no extraction to reuse
        resp = httpx.post(
            f"{api.url}/v1/jobs",
            files=[("file", ("report.pdf", pdf))],
            data={"tasks": "summarize"},
            timeout=60,
            headers=auth,
        )
        assert resp.status_code == 202, resp.text
        with new_session(get_settings()) as s:
            extract_units = (
                s.query(Unit).filter(Unit.job_id == resp.json()["id"], Unit.task == EXTRACT).count()
            )
        assert extract_units == 1

        # No worker consumes these queues yet: the units wait, and the api reports them.
        queued = scrape(metrics_url)
        depth = value(
            queued,
            "docbatch_queue_depth",
            task="summarize",
            model="summarize",
            queue=f"{prefix}.summarize",
        )
        # Redis holds the few the fair dispatcher sent (DOCBATCH_DISPATCH_DEPTH); the
        # backlog metric counts every queued unit (what ops/k8s/keda.yaml scales on).
        assert depth >= min(units, 2)  # (a reconciler elsewhere may republish, never remove)
        backlog = value(queued, "docbatch_queued_units", queue=f"{prefix}.summarize")
        assert backlog >= units
        extract_queue = f"{prefix}.extract"
        extract_depth = value(
            queued, "docbatch_queue_depth", task="extract", model="extract", queue=extract_queue
        )
        assert extract_depth >= extract_units
        # The default priority's unit is in kombu's ...\x06\x169 list, not the queue's own
        # name: the depth counts every priority list.
        broker = redis_lib.Redis.from_url(servers().broker_url)
        assert broker.llen(f"{extract_queue}{Channel.sep}{broker_priority(0)}") >= extract_units
        assert broker.llen(extract_queue) == 0
        ingested = "docbatch_documents_ingested_total"
        assert value(queued, ingested) - value(before, ingested) == 60 + 1  # and the PDF
        units_in = "docbatch_units_ingested_total"  # the queued ones: not files' summarize
        assert value(queued, units_in) - value(before, units_in) == units + extract_units
        assert value(queued, "docbatch_jobs", status="queued") >= 1

        port = free_port()
        worker = WorkerProcess(
            "summarize",
            env={
                **queues,
                "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE,
                "DOCBATCH_WORKER_METRICS_PORT": str(port),
            },
            name="metrics",
        ).wait_ready()
        job = _poll(
            lambda: httpx.get(f"{api.url}/v1/jobs/{job_id}", timeout=15, headers=auth).json(),
            lambda j: j["status"] in ("completed", "completed_with_errors", "failed"),
            what="job done",
        )
        assert job["status"] == "completed", job
        counts = job["counts"]["summarize"]

        w = _poll(
            lambda: scrape(f"http://127.0.0.1:{port}/metrics"),
            lambda m: (
                value(
                    m,
                    "docbatch_worker_documents_total",
                    task="summarize",
                    model="summarize",
                    status="succeeded",
                )
                >= 60
            ),
            timeout=30,
            what="worker metrics",
        )
        task = {"task": "summarize", "model": "summarize"}
        assert value(w, "docbatch_worker_documents_total", status="succeeded", **task) == 60
        assert value(w, "docbatch_worker_documents_total", status="failed", **task) == 0
        assert value(w, "docbatch_worker_chunks_total", **task) == counts["chunks"]
        assert value(w, "docbatch_worker_tokens_in_total", **task) == counts["tokens"]
        # UpperHandler's summary is the document upper-cased: as many words out as in.
        tokens_out = value(w, "docbatch_worker_tokens_out_total", **task)
        assert 0.9 * counts["tokens"] <= tokens_out <= counts["tokens"]
        assert value(w, "docbatch_worker_units_total", outcome="done", **task) >= units
        batches = value(w, "docbatch_worker_batch_size_count", **task)
        assert batches >= units
        assert value(w, "docbatch_worker_batch_size_sum", **task) == counts["chunks"]
        assert value(w, "docbatch_worker_model_latency_seconds_count", **task) == batches
        assert value(w, "docbatch_worker_batch_tokens_count", **task) == batches

        after = _poll(
            lambda: scrape(metrics_url),
            lambda m: (
                value(
                    m,
                    "docbatch_queue_depth",
                    task="summarize",
                    model="summarize",
                    queue=f"{prefix}.summarize",
                )
                == 0
            ),
            timeout=60,
            what="queue drained",
        )
        assert value(after, "docbatch_jobs", status="completed") >= 1
    finally:
        if worker is not None:
            worker.stop()
        api.stop()


def test_beat_publishes_the_reconciler(tmp_path):
    prefix = f"beat{RUN_ID}"
    queue = f"{prefix}.maintenance"
    client = redis_lib.Redis.from_url(servers().broker_url)
    beat = spawn(
        ["beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "INFO"],
        f"beat-{RUN_ID}.log",
        {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_DATABASE_URL": DATABASE_URL},
    )
    try:
        # The reconciler is due every DOCBATCH_RECONCILE_INTERVAL_SECONDS (2 s in tests).
        deadline = time.monotonic() + 60
        while client.llen(queue) < 2:
            assert beat.poll() is None, log_tail(f"beat-{RUN_ID}.log")
            assert time.monotonic() < deadline, log_tail(f"beat-{RUN_ID}.log")
            time.sleep(0.5)
        assert "docbatch.reconcile" in log_tail(f"beat-{RUN_ID}.log", 20000)
    finally:
        stop_process(beat)
        client.delete(queue)
