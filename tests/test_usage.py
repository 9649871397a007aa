"""Storage you can see (issue 21): /v1/usage/storage per tenant, a job's stored size and
expiry, the storage gauges, the dashboard's delete button. Every test ends with every
large object owned by a row."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from docbatch.domain import tenants
from docbatch.schema.db import transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, utcnow
from tests.files import make_html
from tests.fixtures import new_api_key
from tests.storage import job_rows

pytestmark = pytest.mark.usefixtures("blobs_owned")


def test_a_tenants_storage_and_what_retention_deletes_next(app_instance, other_api):
    key = new_api_key("measured")
    page = make_html("the same page twice")
    with TestClient(app_instance, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/v1/usage/storage").json()["documents"] == 0
        parts = [("file", (f"copy-{i}.html", io.BytesIO(page), "text/html")) for i in range(2)]
        parts.append(
            (
                "file",
                (
                    "docs.jsonl",
                    io.BytesIO(b'{"custom_id": "t", "text": "hello."}\n'),
                    "application/x-ndjson",
                ),
            )
        )
        resp = api.post("/v1/jobs", files=parts, data={"tasks": "summarize"})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        with transaction(get_settings()) as s:
            tenants.set_storage_policy(s, "measured", 10, None)
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status="cancelled", finished_at=utcnow() - dt.timedelta(days=4))
            )
        usage = api.get("/v1/usage/storage").json()
        assert usage["tenant"] == "measured"
        assert (usage["jobs"], usage["documents"]) == (1, 3)
        assert usage["original_files"] == 1, "the same bytes twice are stored once"
        assert usage["original_bytes"] == len(page)
        assert usage["openai_files"] == 0 and usage["retention_days"] == 10
        [nxt] = usage["next_deletions"]
        assert nxt["job_id"] == job_id
        expires = dt.datetime.fromisoformat(nxt["expires_at"])
        assert abs((expires - utcnow()) - dt.timedelta(days=6)) < dt.timedelta(minutes=5)

        job = api.get(f"/v1/jobs/{job_id}/storage").json()
        assert job["original_files"] == 2 and job["original_bytes"] == 2 * len(page)
        assert job["expires_at"] == nxt["expires_at"] and job["documents"] == 3
        assert other_api.get(f"/v1/jobs/{job_id}/storage").status_code == 404
        assert other_api.get("/v1/usage/storage").json()["tenant"] == "other"

        metrics = api.get("/metrics").text
        assert "docbatch_stored_documents " in metrics, "no tenant label by default"
        assert "docbatch_stored_original_bytes " in metrics
        assert api.delete(f"/v1/jobs/{job_id}").json()["status"] == "deleting"
    from docbatch.worker.deletion import delete_job

    # Run here (a session worker on the maintenance queue may be running it already).
    deadline = time.monotonic() + 60
    while job_rows(job_id)["jobs"]:
        delete_job(job_id, get_settings())
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_job_page_has_a_delete_button_that_asks_first(anon_api):
    page = anon_api.get("/ui/jobs/job_x").text
    assert 'id="delete"' in page
    script = anon_api.get("/ui/static/app.js").text
    assert "window.confirm(" in script and 'method: "DELETE"' in script
    assert "/storage" in script and "Expires" in script
