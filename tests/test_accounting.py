"""Usage accounting (docbatch.domain.accounting) with real workers: a worker SIGKILLed in the
middle of a unit (triggered when the database shows a unit running) leaves usage equal
to the work done once; reused results count as reused; /v1/usage and `docbatch usage`
reads it back, a tenant key its own tenant's only."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Unit, Usage
from docbatch.worker.reconcile import reconcile_once
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, wait_for_job
from tests.settings_env import override

N_DOCS = 24


def _docs() -> list[dict[str, str]]:
    return [
        {"custom_id": f"u{i}", "text": f"usage document {i}. It has two sentences."}
        for i in range(N_DOCS)
    ]


def _usage_rows(job_id: str) -> list[Any]:
    with new_session(get_settings()) as s:
        return list(s.execute(select(Usage).where(Usage.job_id == job_id)).scalars())


def test_usage_after_a_worker_kill_equals_the_work_done_once(api: Any, private_queues: str) -> None:
    with override(unit_max_documents="3"):
        env = fake_worker_env(private_queues, sleep=0.3, DOCBATCH_UNIT_HEARTBEAT_SECONDS="0.3")
        worker = WorkerProcess("summarize", env=env, name="usage-kill").wait_ready()
        try:
            resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs()})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["id"]
            deadline = time.monotonic() + 120
            while True:  # one unit done and one computing (its attempt counted): kill mid-unit
                with new_session(get_settings()) as s:
                    states = [
                        "computing" if state == "running" and attempts else state
                        for state, attempts in s.execute(
                            select(Unit.state, Unit.attempts).where(Unit.job_id == job_id)
                        )
                    ]
                if states.count("done") >= 1 and "computing" in states:
                    break
                assert time.monotonic() < deadline, states
                time.sleep(0.05)
            for child in worker.children():
                os.kill(child, signal.SIGKILL)
            # The beat's reconciler: a unit the dead process had claimed ahead is taken
            # back once three heartbeats went missing (a cut connection is not a death).
            beat = get_settings().model_copy(update={"unit_heartbeat_seconds": 0.3})
            while api.get(f"/v1/jobs/{job_id}").json()["status"] == "running":
                assert time.monotonic() < deadline + 240, "the job never finished"
                reconcile_once(beat)
                time.sleep(0.5)
            job = wait_for_job(api, job_id, timeout=240)
            # The same documents again, reusing the results: counted as reused.
            again = api.post(
                "/v1/jobs",
                json={"tasks": ["summarize"], "documents": _docs(), "reuse_results": True},
            )
            assert again.status_code == 202, again.text
            reused_job = wait_for_job(api, again.json()["id"], timeout=240)
        finally:
            worker.stop()
    assert job["status"] == "completed", job
    with new_session(get_settings()) as s:
        units = dict(s.execute(select(Unit.id, Unit.attempts).where(Unit.job_id == job_id)).all())
    assert max(units.values()) >= 2, units  # a unit really ran twice
    rows = _usage_rows(job_id)
    assert sorted(r.unit_id for r in rows) == sorted(units)  # one row per unit, no more
    assert sum(r.documents for r in rows) == N_DOCS  # each document counted once
    assert sum(r.reused_documents for r in rows) == 0
    assert sum(r.input_tokens for r in rows) == job["counts"]["summarize"]["tokens"]
    assert sum(r.chunks for r in rows) == job["counts"]["summarize"]["chunks"]
    assert all(r.model_seconds > 0 and r.tenant == "default" for r in rows)
    assert {r.model for r in rows} != {""}

    assert reused_job["status"] == "completed", reused_job
    reused = _usage_rows(reused_job["id"])
    assert sum(r.reused_documents for r in reused) == N_DOCS
    assert sum(r.documents for r in reused) == 0

    by_task = api.get("/v1/usage", params={"group_by": "task"}).json()["data"]
    (summ,) = [r for r in by_task if r["task"] == "summarize"]
    assert summ["tenant"] == "default" and summ["documents"] >= N_DOCS
    assert summ["reused_documents"] >= N_DOCS
    by_day = api.get("/v1/usage", params={"group_by": "day", "start": "2000-01-01"}).json()
    assert {r["tenant"] for r in by_day["data"]} == {"default"}  # only its own


def test_usage_needs_a_key_and_a_tenant_sees_only_its_own(api: Any, anon_api: Any) -> None:
    assert anon_api.get("/v1/usage").status_code == 401
    other = api.get("/v1/usage", params={"tenant": "someone-else"})
    assert other.status_code == 422 and "own usage" in other.text


def test_the_admin_key_sees_every_tenant_and_can_pick_one(
    anon_api: Any, settings_override: Any
) -> None:
    import secrets

    from docbatch.schema.db import transaction
    from docbatch.schema.tables import utcnow

    admin = "adm-" + secrets.token_hex(16)
    settings_override.set(admin_key=admin)
    names = [f"acct{secrets.token_hex(3)}" for _ in range(2)]
    with transaction(get_settings()) as s:
        for i, tenant in enumerate(names):
            s.add(
                Usage(
                    unit_id=10**12 + secrets.randbelow(10**9),
                    tenant=tenant,
                    job_id="job_x",
                    task="embed",
                    queue="q",
                    model="m",
                    state="done",
                    documents=5 + i,
                    reused_documents=0,
                    input_tokens=100,
                    generated_tokens=0,
                    chunks=5,
                    model_seconds=1.5,
                    extract_files=0,
                    extract_pages=0,
                    finished_at=utcnow(),
                )
            )
    auth = {"Authorization": f"Bearer {admin}"}
    every = anon_api.get("/v1/usage", headers=auth, params={"group_by": "model"}).json()
    seen = {r["tenant"]: r["documents"] for r in every["data"] if r["tenant"] in names}
    assert seen == {names[0]: 5, names[1]: 6}
    one = anon_api.get("/v1/usage", headers=auth, params={"tenant": names[1]}).json()
    assert {r["tenant"] for r in one["data"]} == {names[1]}


def _results_by_task(job_id: str) -> dict[str, tuple[int, int]]:
    """Per task: (succeeded and failed results, reused ones) as the results table says."""
    from sqlalchemy import func

    from docbatch.schema.tables import Result

    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Result.task, func.count(), func.count().filter(Result.reused.is_(True)))
            .where(Result.job_id == job_id, Result.status != "cancelled")
            .group_by(Result.task)
        ).all()
    return {task: (int(n), int(r)) for task, n, r in rows}


def _chart_by_task(api: Any, job_id: str) -> dict[str, tuple[int, int]]:
    chart = api.get(f"/v1/jobs/{job_id}/throughput", params={"bucket": 1}).json()
    out: dict[str, tuple[int, int]] = {}
    for point in chart["data"]:
        n, r = out.get(point["task"], (0, 0))
        out[point["task"]] = (n + point["documents"], r + point["reused"])
    done = {p["task"]: p["done"] for p in chart["progress"]}
    assert done == {task: n for task, (n, _) in out.items()}  # the progress line ends there
    return out


def test_the_throughput_chart_adds_up_to_the_jobs_results(api: Any, private_queues: str) -> None:
    """The chart reads the usage rows (one per unit), not every result: on a small job with
    failed and reused documents its totals are what the results table says."""
    docs = _docs()
    docs[5]["text"] = "POISON in this one."
    docs[17]["text"] = "POISON here too."
    with override(unit_max_documents="3"):
        env = fake_worker_env(private_queues)
        worker = WorkerProcess("summarize", env=env, name="usage-chart").wait_ready()
        try:
            first = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
            assert first.status_code == 202, first.text
            job = wait_for_job(api, first.json()["id"], timeout=240)
            again = api.post(
                "/v1/jobs",
                json={"tasks": ["summarize"], "documents": docs, "reuse_results": True},
            )
            assert again.status_code == 202, again.text
            reused_job = wait_for_job(api, again.json()["id"], timeout=240)
        finally:
            worker.stop()
    assert job["status"] == "completed_with_errors", job
    assert (
        _chart_by_task(api, job["id"]) == _results_by_task(job["id"]) == {"summarize": (N_DOCS, 0)}
    )
    # The second job: the 22 succeeded documents copied, the 2 failed ones computed again.
    counts = reused_job["counts"]["summarize"]
    assert (counts["reused"], counts["failed"]) == (N_DOCS - 2, 2), counts
    assert _chart_by_task(api, reused_job["id"]) == _results_by_task(reused_job["id"])
    assert _results_by_task(reused_job["id"]) == {"summarize": (N_DOCS, N_DOCS - 2)}
