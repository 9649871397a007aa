"""Schedule options (issue 26 item 12): only new or changed files, a time zone, priority and
webhook handed to the jobs, pause/resume, run now and the latest run; through the api
(real Postgres) and the CLI against a real api process."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from docbatch.domain.schedules import NOTHING_NEW, next_fire
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Job, ScheduleRun, utcnow
from tests.fixtures import ROOT
from tests.procs import ApiProcess


@pytest.fixture
def roots(tmp_path: Path, limits, private_queues) -> Path:  # noqa: ANN001
    """A configured root; units of jobs fired here go to private queues nobody consumes."""
    root = tmp_path / "roots"
    (root / "default").mkdir(parents=True)
    limits["SCHEDULE_FOLDER_ROOTS"] = json.dumps([str(root)])
    return root


CREATED: list[str] = []


@pytest.fixture(autouse=True)
def _remove_schedules(api):  # noqa: ANN001, ANN202
    """Other tests list the tenant's schedules: leave none behind."""
    yield
    while CREATED:
        api.delete(f"/v1/schedules/{CREATED.pop()}")


def _create(api, folder: Path, **options: object) -> dict:  # noqa: ANN001
    resp = api.post(
        "/v1/schedules",
        json={
            "name": f"s-{secrets.token_hex(4)}",
            "cron": "0 2 * * *",
            "source": {"type": "folder", "path": str(folder)},
            "tasks": ["summarize"],
            **options,
        },
    )
    assert resp.status_code == 201, resp.text
    CREATED.append(resp.json()["id"])
    return dict(resp.json())


def _custom_ids(job_id: str) -> list[str]:
    with new_session(get_settings()) as s:
        return sorted(s.scalars(select(Document.custom_id).where(Document.job_id == job_id)))


def _cancel(api, *job_ids: str | None) -> None:  # noqa: ANN001
    for job_id in job_ids:
        if job_id:
            api.post(f"/v1/jobs/{job_id}/cancel")


def test_only_changed_takes_new_and_changed_files_only(api, roots):
    folder = roots / "default" / "inbox"
    folder.mkdir()
    (folder / "a.txt").write_text("first document")
    (folder / "b.txt").write_text("second document")
    schedule = _create(api, folder, only_changed=True)
    assert schedule["only_changed"] is True
    sid = schedule["id"]

    first = api.post(f"/v1/schedules/{sid}/run")
    assert first.status_code == 201, first.text
    first_job = first.json()["job_id"]
    assert _custom_ids(first_job) == ["a.txt", "b.txt"]

    again = api.post(f"/v1/schedules/{sid}/run").json()
    assert again["job_id"] is None and again["error"] == NOTHING_NEW
    assert api.get(f"/v1/schedules/{sid}/runs/latest").json()["error"] == NOTHING_NEW

    (folder / "b.txt").write_text("second document, edited")
    stamp = time.time() + 5  # a distinct mtime whatever the file system's resolution
    os.utime(folder / "b.txt", (stamp, stamp))
    (folder / "c.txt").write_text("a new one")
    third = api.post(f"/v1/schedules/{sid}/run").json()
    assert _custom_ids(third["job_id"]) == ["b.txt", "c.txt"]
    latest = api.get(f"/v1/schedules/{sid}/runs/latest").json()
    assert latest["job_id"] == third["job_id"] and latest["job_status"] == "queued"

    # Without the option, every run takes the whole folder again.
    plain = _create(api, folder)
    whole = api.post(f"/v1/schedules/{plain['id']}/run").json()
    assert _custom_ids(whole["job_id"]) == ["a.txt", "b.txt", "c.txt"]
    _cancel(api, first_job, third["job_id"], whole["job_id"])


def test_timezone_priority_and_webhook_reach_the_runs(api, roots):
    folder = roots / "default" / "tz"
    folder.mkdir()
    (folder / "a.txt").write_text("a document")
    bad = api.post(
        "/v1/schedules",
        json={
            "name": "bad-tz",
            "cron": "0 2 * * *",
            "source": {"type": "folder", "path": str(folder)},
            "tasks": ["summarize"],
            "timezone": "Mars/Olympus",
        },
    )
    assert bad.status_code == 422 and "timezone" in bad.text
    schedule = _create(
        api,
        folder,
        timezone="Europe/Berlin",
        priority=7,
        webhook_url="https://hooks.example.com/docbatch?token=abc",
    )
    assert schedule["timezone"] == "Europe/Berlin" and schedule["priority"] == 7
    assert schedule["has_webhook"] is True and "token" not in json.dumps(schedule)
    # 02:00 in Berlin: 01:00 UTC in winter, 00:00 UTC in summer.
    next_run = dt.datetime.fromisoformat(schedule["next_run_at"])
    berlin = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (2, 0), schedule["next_run_at"]
    assert next_run == next_fire("0 2 * * *", utcnow(), "Europe/Berlin")

    from docbatch.worker.scheduler import tick

    fired = tick(get_settings(), now=next_run + dt.timedelta(seconds=5))
    job_id = next(f.job.job.id for f in fired if f.schedule_id == schedule["id"] and f.job)
    with new_session(get_settings()) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.priority == 7
        assert job.webhook_url == "https://hooks.example.com/docbatch?token=abc"
        run = s.scalars(select(ScheduleRun).where(ScheduleRun.job_id == job_id)).one()
        assert run.period_start == next_run
    _cancel(api, job_id)


def test_pause_resume(api, roots):
    folder = roots / "default" / "pause"
    folder.mkdir()
    (folder / "a.txt").write_text("a document")
    schedule = _create(api, folder)
    sid = schedule["id"]
    assert api.get(f"/v1/schedules/{sid}/runs/latest").status_code == 404
    paused = api.post(f"/v1/schedules/{sid}/pause").json()
    assert paused["enabled"] is False

    from docbatch.worker.scheduler import tick

    due = next_fire("0 2 * * *", utcnow()) + dt.timedelta(seconds=5)
    assert all(f.schedule_id != sid for f in tick(get_settings(), now=due))
    resumed = api.post(f"/v1/schedules/{sid}/resume").json()
    assert resumed["enabled"] is True
    fired = [f for f in tick(get_settings(), now=due) if f.schedule_id == sid]
    assert len(fired) == 1 and fired[0].job is not None
    _cancel(api, fired[0].job.job.id)


def test_the_schedules_commands(tmp_path, api_key):
    root = tmp_path / "roots"
    folder = root / "default" / "nightly"
    folder.mkdir(parents=True)
    (folder / "a.md").write_text("# one")
    api = ApiProcess(
        {
            "DOCBATCH_QUEUE_PREFIX": f"sc{secrets.token_hex(3)}",
            "DOCBATCH_SCHEDULE_FOLDER_ROOTS": json.dumps([str(root)]),
        },
        migrate=False,
    ).wait_ready()
    env = {**os.environ, "DOCBATCH_API_URL": api.url, "DOCBATCH_API_KEY": api_key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docbatch.cli", "schedules", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        name = f"n-{secrets.token_hex(3)}"
        added = cli(
            "add",
            name,
            "--cron",
            "30 1 * * *",
            "--folder",
            str(folder),
            "--task",
            "summarize",
            "--only-changed",
            "--timezone",
            "America/New_York",
            "--priority",
            "3",
        )
        assert added.returncode == 0, added.stderr
        shown = json.loads(cli("show", name, "--format", "json").stdout)
        assert shown["timezone"] == "America/New_York" and shown["only_changed"] is True
        assert shown["priority"] == 3
        ran = cli("run", name)
        assert ran.returncode == 0 and ran.stdout.strip().startswith("job_"), ran.stderr
        nothing = cli("run", name, "--format", "json")
        assert nothing.returncode == 1 and json.loads(nothing.stdout)["error"] == NOTHING_NEW
        latest = json.loads(cli("latest", name, "--format", "json").stdout)
        assert latest["error"] == NOTHING_NEW
        assert cli("pause", name).returncode == 0
        assert json.loads(cli("show", name, "--format", "json").stdout)["enabled"] is False
        assert cli("resume", name).returncode == 0
        listed = cli("list").stdout
        assert name in listed and "30 1 * * *" in listed
        assert cli("remove", name).returncode == 0
    finally:
        api.stop()
