"""What an SRE reads: JSON log lines carrying job, unit, tenant, task and request ids, and
the metrics (api, model worker, extract worker, maintenance), from real processes."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from docbatch.processes import free_port
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Unit, WebhookDelivery, utcnow
from tests.fakeworkers import fake_worker_env
from tests.files import PAGES, make_pdf, make_zip_bomb
from tests.fixtures import ARTIFACTS, ROOT, WorkerProcess, spawn, stop_process, wait_for_job
from tests.procs import ApiProcess


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _value(samples: dict, name: str, **labels: str) -> float:
    """The sum over the series of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and set(labels.items()) <= set(ls)  # type: ignore[arg-type]
    )


def _scrape(port: int, until: str, timeout: float = 60) -> dict:
    """The samples at :port/metrics once ``until`` counts at least one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            if _value(samples, until) >= 1:
                return samples
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no {until} on :{port}"
        time.sleep(0.3)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_importing_the_api_touches_no_server():
    """`import docbatch.api.app` (uvicorn's workers, tools, the docs build) opens no
    connection: the database and the broker point at a socket that records any."""
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.settimeout(0.5)
        port = trap.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "DOCBATCH_DATABASE_URL": f"postgresql+psycopg://x@127.0.0.1:{port}/x",
            "DOCBATCH_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        }
        out = subprocess.run(
            [sys.executable, "-c", "import docbatch.api.app; print('ok')"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
        try:
            conn, _ = trap.accept()
            conn.close()
            raise AssertionError("importing the api connected to the database or broker")
        except TimeoutError:
            pass


def test_api_json_lines_request_ids_and_metrics(api_key):
    env = {
        "DOCBATCH_LOG_FORMAT": "json",
        "DOCBATCH_METRICS_TENANTS": "5",
        "DOCBATCH_QUEUE_PREFIX": f"obs{free_port()}",  # no worker: its units stay queued
    }
    api = ApiProcess(env, migrate=False).wait_ready()
    # A webhook delivery written ten minutes ago and never sent (no `docbatch webhooks`).
    with transaction(get_settings()) as s:
        stuck = WebhookDelivery(
            tenant="default",
            payload={},
            url="http://127.0.0.1:9/hook",
            event="job.deleted",
            created_at=utcnow() - dt.timedelta(minutes=10),
        )
        s.add(stuck)
    try:
        auth = {"Authorization": f"Bearer {api_key}"}
        docs = {"tasks": ["embed"], "documents": [{"custom_id": "w", "text": "waiting"}]}
        posted = httpx.post(f"{api.url}/v1/jobs", json=docs, headers=auth)
        assert posted.status_code == 202, posted.text
        given = httpx.get(f"{api.url}/v1/jobs", headers={**auth, "X-Request-ID": "req-4242"})
        assert given.status_code == 200 and given.headers["X-Request-ID"] == "req-4242"
        made = httpx.get(f"{api.url}/v1/jobs/nope", headers=auth)
        assert made.status_code == 404 and len(made.headers["X-Request-ID"]) >= 16
        metrics = _samples(httpx.get(f"{api.url}/metrics").text)
    finally:
        api.stop()
        with transaction(get_settings()) as s:
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.id == stuck.id))
    lines = (ARTIFACTS / api.log_name).read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    (mine,) = [p for p in parsed if p.get("request_id") == "req-4242"]
    assert mine["tenant"] == "default" and mine["route"] == "/v1/jobs" and mine["status"] == 200
    (other,) = [p for p in parsed if p.get("request_id") == made.headers["X-Request-ID"]]
    assert other["route"] == "/v1/jobs/{job_id}" and other["status"] == 404

    assert _value(metrics, "docbatch_build_info") == 1
    assert (
        _value(
            metrics,
            "docbatch_api_request_duration_seconds_count",
            route="/v1/jobs",
            method="GET",
            status="200",
        )
        >= 1
    )
    assert _value(metrics, "docbatch_tenant_jobs", tenant="default", status="queued") >= 1
    assert _value(metrics, "docbatch_tenant_queued_units", tenant="default", task="embed") >= 1
    ages = [v for (n, ls), v in metrics.items() if n == "docbatch_oldest_queued_unit_age_seconds"]
    assert ages and all(v >= 0 for v in ages)
    # The webhook backlog (other tests' deliveries may be pending too).
    assert _value(metrics, "docbatch_webhook_deliveries_pending") >= 1
    assert _value(metrics, "docbatch_webhook_oldest_pending_age_seconds") >= 600


def test_workers_log_json_with_unit_ids_and_serve_metrics(api, private_queues):
    ports = {name: free_port() for name in ("model", "extract", "maintenance")}
    common = {"DOCBATCH_QUEUE_PREFIX": private_queues, "DOCBATCH_LOG_FORMAT": "json"}
    model = WorkerProcess(
        "summarize",
        env=fake_worker_env(
            private_queues,
            DOCBATCH_LOG_FORMAT="json",
            DOCBATCH_WORKER_METRICS_PORT=str(ports["model"]),
        ),
    )
    extract = WorkerProcess(
        "extract", env={**common, "DOCBATCH_WORKER_METRICS_PORT": str(ports["extract"])}
    )
    log_name = f"maintenance-obs-{time.monotonic_ns()}.log"
    maintenance = spawn(
        ["maintenance"],
        log_name,
        {**common, "DOCBATCH_WORKER_METRICS_PORT": str(ports["maintenance"])},
    )
    beat = spawn(["beat", "--schedule", f"/tmp/beat-{log_name}"], f"beat-{log_name}", common)
    try:
        model.wait_ready()
        extract.wait_ready()
        files = [("three.pdf", make_pdf(PAGES)), ("bomb.zip", make_zip_bomb())]
        parts = [("file", (name, data)) for name, data in files]
        job_id = api.post("/v1/jobs", files=parts, data={"tasks": "summarize"}).json()["id"]
        job = wait_for_job(api, job_id, timeout=180)
        assert job["status"] == "completed_with_errors", job

        worker = _scrape(ports["model"], "docbatch_job_duration_seconds_count")
        assert _value(worker, "docbatch_unit_queue_wait_seconds_count", task="summarize") >= 1
        assert _value(worker, "docbatch_job_duration_seconds_count") >= 1
        assert _value(worker, "docbatch_build_info", component="worker") == 1
        files_seen = _scrape(ports["extract"], "docbatch_extract_files_total")
        assert _value(files_seen, "docbatch_extract_files_total", kind="pdf") == 1
        assert _value(files_seen, "docbatch_extract_pages_total", kind="pdf") == len(PAGES)
        assert _value(files_seen, "docbatch_extract_failures_total") == 1
        assert _value(files_seen, "docbatch_extract_unit_seconds_count") >= 1
        passes = _scrape(ports["maintenance"], "docbatch_reconciler_pass_seconds_count")
        assert _value(passes, "docbatch_reconciler_pass_seconds_count") >= 1
    finally:
        model.stop()
        extract.stop()
        stop_process(beat)
        stop_process(maintenance)

    with new_session(get_settings()) as s:
        units = set(s.scalars(select(Unit.id).where(Unit.job_id == job_id)))
    for proc, task in ((model, "summarize"), (extract, "extract")):
        assert "INFO/MainProcess]" not in proc.log  # no text lines left
        lines = _json_lines(proc.log)
        mine = [x for x in lines if x.get("unit_id") in units]
        assert mine, proc.log[-3000:]
        for line in mine:
            assert line["job_id"] == job_id and line["tenant"] == "default", line
            assert line["task"] == task, line
    maintenance_lines = _json_lines((ARTIFACTS / log_name).read_text())
    assert any("reconcile" in x["message"] for x in maintenance_lines)
    beat_log = (ARTIFACTS / f"beat-{log_name}").read_text()
    assert not re.search(r"^\[\d{4}-\d\d-\d\d", beat_log, re.M)  # no text log line (banner aside)
    beat_lines = _json_lines(beat_log)
    assert any("Sending due task" in x["message"] for x in beat_lines), beat_log[-2000:]
