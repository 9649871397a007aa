"""An idle cluster (every model worker scaled to zero) still fires its schedules and
republishes lost units: `docbatch maintenance` consumes the maintenance queue alone.

Real beat, real `docbatch maintenance`, real Postgres and Redis; no model or extract
worker consumes this test's queues (a private queue prefix).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from docbatch.api.metrics import priority_queue_names
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, Unit, utcnow
from tests.fixtures import ARTIFACTS, load_corpus, spawn, stop_process
from tests.settings_env import override


@pytest.fixture
def idle_cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private prefix and schedule root, in force here and in the processes started."""
    root = tmp_path / "roots"
    (root / "default").mkdir(parents=True)
    with override(
        queue_prefix=f"idle{secrets.token_hex(3)}",
        schedule_folder_roots=json.dumps([str(root)]),
        schedule_tick_seconds="1",
    ) as env:
        yield env


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.3)


def _depth(broker: redis.Redis, queue: str) -> int:
    return sum(int(broker.llen(key)) for key in priority_queue_names(queue))


def test_beat_and_maintenance_alone_fire_schedules_and_republish(api, idle_cluster, tmp_path):
    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url)
    embed_queue = settings.queue_for("embed")

    # A unit whose Redis message is lost: its job is queued, then its lists are deleted.
    docs = load_corpus("stdlib-docs.jsonl", 12)
    job_id = api.post("/v1/jobs", json={"tasks": ["embed"], "documents": docs}).json()["id"]
    with new_session(get_settings()) as s:
        units = s.scalars(select(Unit.id).where(Unit.job_id == job_id)).all()
    assert _depth(broker, embed_queue) == len(units) >= 1
    broker.delete(*priority_queue_names(embed_queue))
    lost_at = utcnow()
    assert _depth(broker, embed_queue) == 0

    inbox = Path(settings.schedule_folder_roots[0]) / "default" / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("alpha one", encoding="utf-8")
    name = f"every2s-{secrets.token_hex(3)}"
    created = api.post(
        "/v1/schedules",
        json={
            "name": name,
            "cron": "* * * * * */2",
            "source": {"type": "folder", "path": str(inbox)},
            "tasks": ["summarize"],
        },
    )
    assert created.status_code == 201, created.text

    maintenance_log = f"maintenance-{time.monotonic_ns()}.log"
    maintenance = spawn(["maintenance", "--loglevel", "INFO"], maintenance_log, idle_cluster)
    beat = spawn(
        ["beat", "--schedule", str(tmp_path / "beat")], f"beat-idle-{name}.log", idle_cluster
    )
    try:
        # The schedule fires: a job exists whose units wait on the (workerless) queue.
        fired = _wait(
            lambda: _jobs_named(name), 90, "no schedule fired with only beat + maintenance"
        )
        # The lost units are sent again: back in the broker, published after the loss.
        _wait(lambda: _depth(broker, embed_queue) >= len(units), 90, "lost units not republished")
    finally:
        api.delete(f"/v1/schedules/{created.json()['id']}")
        stop_process(beat)
        stop_process(maintenance)
    with new_session(get_settings()) as s:
        republished = s.scalars(
            select(Unit).where(Unit.job_id == job_id, Unit.published_at > lost_at)
        ).all()
        assert {u.id for u in republished} == set(units)
        assert all(u.state == "queued" for u in republished)
    assert fired[0].status in ("queued", "running")
    log = (ARTIFACTS / maintenance_log).read_text(errors="replace")
    assert "docbatch.schedule_tick" in log and "docbatch.reconcile" in log, log[-2000:]


def _jobs_named(name: str) -> list[Job]:
    with new_session(get_settings()) as s:
        return list(s.scalars(select(Job).where(Job.name.like(f"{name} %"))))
