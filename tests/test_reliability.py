"""Cancellation, a lost queue, and a unit delivered twice: nothing lost, nothing doubled."""

from __future__ import annotations

import time

import redis
from sqlalchemy import func, select

from docbatch.api.metrics import priority_queue_names
from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Result, Unit
from tests.fakeworkers import fake_worker_env
from tests.fixtures import (
    WorkerProcess,
    load_corpus,
    read_ndjson,
    spawn,
    stop_process,
    wait_for_job,
)


def _accounted(job: dict) -> None:
    for c in job["counts"].values():
        assert c["succeeded"] + c["failed"] + c["cancelled"] == c["total"]


def test_cancel_stops_queued_units(api, private_queues, settings_override):
    settings_override.set(unit_max_documents="2")
    worker = WorkerProcess("summarize", env=fake_worker_env(private_queues, sleep=0.4)).wait_ready()
    docs = load_corpus("stdlib-docs.jsonl", 40)
    job_id = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()["id"]
    deadline = time.monotonic() + 120
    while api.get(f"/v1/jobs/{job_id}").json()["counts"]["summarize"]["succeeded"] == 0:
        assert time.monotonic() < deadline, "no unit finished"
        time.sleep(0.1)
    cancelled_at = api.post(f"/v1/jobs/{job_id}/cancel").json()
    assert cancelled_at["status"] in ("cancelling", "cancelled")
    job = wait_for_job(api, job_id)
    worker.stop()
    assert job["status"] == "cancelled"
    _accounted(job)
    c = job["counts"]["summarize"]
    assert c["succeeded"] >= 2 and c["cancelled"] >= 20 and c["failed"] == 0
    with new_session(get_settings()) as s:
        never_started = s.scalar(
            select(func.count()).where(
                Unit.job_id == job_id, Unit.state == "cancelled", Unit.attempts == 0
            )
        )
    assert never_started >= 10  # queued units were closed without running
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    statuses = {x["results"]["summarize"]["status"] for x in lines}
    assert statuses == {"succeeded", "cancelled"}


def test_lost_queue_is_republished_by_the_reconciler(api, private_queues):
    docs = load_corpus("stdlib-docs.jsonl", 30)
    job_id = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()["id"]
    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url)
    queue = settings.queue_for("summarize")
    keys = priority_queue_names(queue)  # one Redis list per priority level
    assert sum(broker.llen(key) for key in keys) >= 1
    broker.delete(*keys)  # every message of the job is gone
    env = fake_worker_env(private_queues)
    worker = WorkerProcess("summarize", env=env).wait_ready()
    beat = spawn(
        ["beat", "--loglevel", "INFO", "--schedule", f"/tmp/beat-{job_id}"],
        f"beat-{job_id}.log",
        env,
    )
    try:
        job = wait_for_job(api, job_id, timeout=120)
    finally:
        stop_process(beat)
        worker.stop()
    assert job["status"] == "completed"
    assert job["counts"]["summarize"]["succeeded"] == 30


def test_a_unit_delivered_twice_is_written_once(private_queues):
    from docbatch.worker.lease import Lease
    from docbatch.worker.model_stage import ModelStage
    from docbatch.worker.runner import UnitRunner
    from docbatch.worker.stage import Held
    from tests.fakes import UpperHandler

    settings = get_settings()
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}],
            documents=[
                ({"custom_id": f"d{i}", "text": f"text number {i}."}, None) for i in range(5)
            ],
        )
        job_id, (unit_id,) = new.job.id, new.unit_ids
    handler = UpperHandler(settings.model_for("summarize"))
    handler.setup("cpu")
    runner = UnitRunner(ModelStage(handler, settings), settings)
    # First delivery claims the unit and computes, but is slow to finish and loses its
    # lease (its host drops off the network)...
    slow = Lease(settings)
    first = runner.claim(slow, unit_id)
    assert isinstance(first, Held)
    first_outcome = runner.compute(slow, first)
    slow.close()
    # ...while a redelivery runs the whole unit to the end.
    assert runner.run(unit_id) == "done"
    assert runner.finish(slow, first, first_outcome) == "superseded"
    assert runner.run(unit_id) == "skipped"
    with new_session(get_settings()) as s:
        rows = s.scalar(select(func.count()).where(Result.job_id == job_id))
        job = jobs.job_public(s, jobs.get_job(s, None, job_id))
    assert rows == 5
    assert job.status == "completed"
    assert job.counts["summarize"].succeeded == 5 and job.counts["summarize"].total == 5
