"""Retention and keep_originals (issue 21): a tenant's and a job's retention, the 422 of a
job asking for more than its tenant keeps, finished jobs past it deleted by the lifecycle
pass with a job.deleted webhook, and original bytes dropped once extracted. Every test
ends with every large object owned by a row."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys

import pytest
from sqlalchemy import select, update

from docbatch.domain import jobs, webhooks
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import DocumentFile, Job, WebhookDelivery, utcnow
from docbatch.worker.lifecycle import lifecycle_pass
from tests.fakeworkers import fake_worker_env
from tests.files import make_html
from tests.fixtures import ROOT, WorkerProcess, new_api_key, wait_for_job
from tests.storage import job_rows, large_objects

pytestmark = pytest.mark.usefixtures("blobs_owned")


def _set_retention(tenant: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "tenants", "set-retention", tenant, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _finished_job(tenant: str, days_ago: float, **options: object) -> str:
    settings = get_settings()
    with unit_of_work(settings, publish=False) as s:
        job_id = jobs.create_job(
            s,
            settings,
            tenant=tenant,
            tasks=[{"type": "summarize"}],
            documents=[({"custom_id": "a", "text": "Some text."}, None)],
            **options,  # type: ignore[arg-type]
        ).job.id
    with transaction(get_settings()) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="completed", finished_at=utcnow() - dt.timedelta(days=days_ago))
        )
    return job_id


def test_a_job_may_not_ask_to_be_kept_longer_than_its_tenant(app_instance):
    from fastapi.testclient import TestClient

    new_api_key("keeps-a-week")
    assert _set_retention("keeps-a-week", "--days", "7") == {
        "tenant": "keeps-a-week",
        "retention_days": 7,
        "keep_originals": True,
    }
    key = new_api_key("keeps-a-week")
    body = {"tasks": ["summarize"], "documents": [{"custom_id": "a", "text": "x."}]}
    with TestClient(app_instance, headers={"Authorization": f"Bearer {key}"}) as api:
        resp = api.post("/v1/jobs", json={**body, "retention_days": 30})
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["field"] == "retention_days" and "7 days" in error["message"], error
        ok = api.post("/v1/jobs", json={**body, "retention_days": 3})
        assert ok.status_code == 202, ok.text
        assert api.delete(f"/v1/jobs/{ok.json()['id']}").status_code == 202
    with new_session(get_settings()) as s:
        job = s.get(Job, ok.json()["id"])
        assert job is None or job.retention_days == 3


def test_finished_jobs_past_retention_are_deleted_with_a_webhook():
    new_api_key("keeps-five-days")
    _set_retention("keeps-five-days", "--days", "5")
    hook = "https://hooks.example.com/deleted"
    old = _finished_job("keeps-five-days", 6, webhook_url=hook)
    recent = _finished_job("keeps-five-days", 3)
    short = _finished_job("keeps-five-days", 3, retention_days=2)
    forever = _finished_job("default", 400)  # DOCBATCH_RETENTION_DAYS is 0: kept forever

    report = lifecycle_pass(get_settings(), inline=True)
    assert set(report.expired_jobs) >= {old, short}, report
    assert recent not in report.expired_jobs and forever not in report.expired_jobs
    for gone in (old, short):
        assert all(n == 0 for n in job_rows(gone).values()), job_rows(gone)
    for kept in (recent, forever):
        assert job_rows(kept)["documents"] == 1
    with new_session(get_settings()) as s:
        rows = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event == "job.deleted")
        ).all()
        mine = [r for r in rows if (r.payload or {}).get("id") == old]
        assert len(mine) == 1 and mine[0].job_id is None and mine[0].tenant == "keeps-five-days"
        assert mine[0].payload["reason"] == "retention"
        assert not [r for r in rows if (r.payload or {}).get("id") == short], "no webhook_url"
    # The delivery is signed and sent like any other (docbatch webhooks).
    with transaction(get_settings()) as s:
        out = webhooks.claim(s, mine[0].id, 30)
    assert out is not None and out.url == hook and out.event == "job.deleted"
    assert json.loads(out.body)["job"]["id"] == old and out.secret


def test_keep_originals_false_drops_the_bytes_once_extracted(api, private_queues):
    started = [
        WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": private_queues}),
        WorkerProcess("summarize", env=fake_worker_env(private_queues)),
    ]
    try:
        for w in started:
            w.wait_ready()
        before = large_objects()
        parts = [
            ("file", (f"p{i}.html", io.BytesIO(make_html(f"kept or not {i}")), "text/html"))
            for i in range(3)
        ]
        resp = api.post(
            "/v1/jobs", files=parts, data={"tasks": "summarize", "keep_originals": "false"}
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        assert large_objects() == before + 3, "stored until extracted"
        job = wait_for_job(api, job_id, timeout=180)
    finally:
        for w in started:
            w.stop()
    assert job["status"] == "completed", job
    assert large_objects() == before, "the bytes went once their text was extracted"
    with new_session(get_settings()) as s:
        files = s.scalars(select(DocumentFile).where(DocumentFile.job_id == job_id)).all()
    assert len(files) == 3 and all(f.blob_oid is None and f.sha256 for f in files)
    lines = [json.loads(x) for x in api.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
    assert all(line["results"]["summarize"]["status"] == "succeeded" for line in lines)
