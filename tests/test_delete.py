"""Deleting a job (issue 21): at once for the client, in batches underneath, nothing left
(real Postgres, Redis and worker processes; the fake upper-casing handler at the model
seam). Every test ends with every large object owned by a row (tests/storage.py)."""

from __future__ import annotations

import io
import json
import time

import pytest

from docbatch.domain import ledger
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.retry import RetryPolicy
from docbatch.schema.settings import get_settings
from tests.fakeworkers import fake_worker_env
from tests.files import make_html
from tests.fixtures import WorkerProcess
from tests.storage import assert_blobs_owned, job_rows, large_objects

pytestmark = pytest.mark.usefixtures("blobs_owned")

BIG = 5000
FILES = 12


def _submit_with_files(api, documents: int, files: int, **fields) -> str:
    lines = "".join(
        json.dumps({"custom_id": f"d{i}", "text": f"document number {i}."}) + "\n"
        for i in range(documents)
    )
    parts = [("file", ("docs.jsonl", io.BytesIO(lines.encode()), "application/x-ndjson"))]
    parts += [
        ("file", (f"f{i}.html", io.BytesIO(make_html(f"page {i}")), "text/html"))
        for i in range(files)
    ]
    resp = api.post("/v1/jobs", files=parts, data={"tasks": "summarize", **fields})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def test_a_big_job_deleted_while_its_worker_runs_leaves_nothing(
    api, private_queues, settings_override
):
    settings_override.set(unit_max_documents="10")
    env = fake_worker_env(private_queues, sleep=0.3, DOCBATCH_DELETE_BATCH_ROWS="700")
    worker = WorkerProcess("summarize", env=env).wait_ready()
    try:
        before = large_objects()
        job_id = _submit_with_files(api, BIG, FILES)
        assert large_objects() == before + FILES
        deadline = time.monotonic() + 120
        while api.get(f"/v1/jobs/{job_id}").json()["counts"]["summarize"]["succeeded"] == 0:
            assert time.monotonic() < deadline, "no unit finished"
            time.sleep(0.1)
        with unit_of_work(get_settings(), publish=False) as s:
            unit_ids = [
                int(u)
                for u in s.execute(
                    ledger.select(ledger.Unit.id).where(ledger.Unit.job_id == job_id)
                ).scalars()
            ]

        started = time.monotonic()
        resp = api.delete(f"/v1/jobs/{job_id}")
        took = time.monotonic() - started
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "deleting"
        # The request cancels the running job first, closing up to
        # DOCBATCH_CANCEL_BATCH_DOCUMENTS (5,000: all of this job's 500 units) inline: a
        # couple of seconds on a quiet machine, 8 s seen at load 7. The rows themselves
        # go off the request path: the progress seen below shows it.
        assert took < 30.0, f"delete took {took:.1f} s"

        # GET shows the job deleting, with what is left going down, until it is a 404.
        seen: list[dict[str, int]] = []
        deadline = time.monotonic() + 120
        while (got := api.get(f"/v1/jobs/{job_id}")).status_code == 200:
            body = got.json()
            assert body["status"] == "deleting", body
            if body["delete_left"]:
                seen.append(body["delete_left"])
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert got.status_code == 404
    finally:
        worker.stop()
    assert any(left.get("documents", 0) > 0 for left in seen), "progress was visible"
    totals = [sum(left.values()) for left in seen]
    assert totals == sorted(totals, reverse=True), "what is left never grows"
    assert all(n == 0 for n in job_rows(job_id).values()), job_rows(job_id)
    assert large_objects() == before, "every original file's bytes went with the job"
    assert f"{job_id}: deleted" in worker.log
    assert api.get(f"/v1/jobs/{job_id}/results").status_code == 404
    # A message for one of its units that was still in Redis: the worker skips it.
    with unit_of_work(get_settings(), publish=False) as s:
        assert ledger.claim_unit(s, unit_ids[-1], "late", RetryPolicy.of(get_settings())) is None
    assert_blobs_owned()


def test_another_tenants_job_is_a_404_and_stays(api, other_api, private_queues):
    env = fake_worker_env(private_queues)
    worker = WorkerProcess("summarize", env=env).wait_ready()
    try:
        job_id = _submit_with_files(api, 3, 2)  # no extract worker: its files wait
        assert other_api.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] != "deleting"
        assert job_rows(job_id)["documents"] == 5
        # Its owner deletes it: cancelled at once, then deleted.
        assert api.delete(f"/v1/jobs/{job_id}").json()["status"] == "deleting"
        deadline = time.monotonic() + 60
        while api.get(f"/v1/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        worker.stop()
    assert all(n == 0 for n in job_rows(job_id).values())
