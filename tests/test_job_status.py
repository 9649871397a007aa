"""The poll answer (``GET /v1/jobs/{id}``, read in one query) is the job's public document."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from docbatch.schema.settings import get_settings


def _job(reuse: bool, started: bool) -> str:
    from docbatch.schema.db import transaction
    from docbatch.schema.tables import Document, Job, JobTask, Result

    now = dt.datetime.now(dt.UTC)
    with transaction(get_settings()) as s:
        job = Job(
            tenant="default",
            name="poll",
            status="running" if started else "queued",
            document_count=3,
            reuse_results=reuse,
            started_at=now - dt.timedelta(seconds=4) if started else None,
        )
        s.add(job)
        s.flush()
        s.add(
            JobTask(
                job_id=job.id,
                task="embed",
                params={},
                total=3,
                succeeded=2,
                chunks=5,
                reused=1 if reuse else 0,  # of its results below, counted as its units closed
            )
        )
        s.add(
            JobTask(
                job_id=job.id,
                task="summarize",
                params={"method": "extractive"},
                total=3,
                failed=1,
                cancelled=1,
                tokens=77,
            )
        )
        for seq in range(3):
            doc = Document(job_id=job.id, seq=seq, custom_id=f"d{seq}", text="t", content_hash="h")
            s.add(doc)
            s.flush()
            if seq < 2:
                s.add(
                    Result(
                        job_id=job.id,
                        document_id=doc.id,
                        task="embed",
                        status="succeeded",
                        reused=seq == 0,
                    )
                )
        return job.id


def _public(job_id: str) -> dict[str, Any]:
    from docbatch.domain import jobs
    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings

    with new_session(get_settings()) as s:
        public = jobs.job_public(s, jobs.get_job(s, None, job_id), get_settings())
        return dict(json.loads(public.model_dump_json()))


@pytest.mark.parametrize(("reuse", "started"), [(False, False), (True, True)])
def test_poll_answers_the_public_job(api: Any, reuse: bool, started: bool) -> None:
    job_id = _job(reuse, started)
    got = api.get(f"/v1/jobs/{job_id}")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    body = got.json()
    want = _public(job_id)
    # The rate moves with the clock between the two reads.
    for key in ("elapsed_seconds", "documents_per_second"):
        assert (body.pop(key) is None) == (want.pop(key) is None) == (not started)
    assert body == want
    assert body["counts"]["embed"]["reused"] == (1 if reuse else 0)
    assert body["counts"]["summarize"]["pending"] == 1
    assert body["tasks"]["summarize"] == {"method": "extractive"}


def test_poll_of_a_job_not_yours(api: Any, other_api: Any, anon_api: Any) -> None:
    job_id = _job(False, False)
    assert other_api.get(f"/v1/jobs/{job_id}").status_code == 404
    assert api.get("/v1/jobs/job_doesnotexist").status_code == 404
    assert "not found" in api.get("/v1/jobs/job_doesnotexist").json()["detail"]
    assert anon_api.get(f"/v1/jobs/{job_id}").status_code == 401
    bad = api.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer dbk_wrong"})
    assert bad.status_code == 401
