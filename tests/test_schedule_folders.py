"""Folder schedules: one schedule's unreadable file never stops the others, and a tenant
reads only below its own root, checked on the real path of every file at every firing
(real Postgres and the api; the tick is the function beat's message runs)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from docbatch.domain.schedules import next_fire
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, ScheduleRun, utcnow
from tests.fixtures import ROOT

CRON = "0 2 * * *"


@pytest.fixture
def roots(tmp_path: Path, limits, private_queues) -> Path:  # noqa: ANN001
    """One configured root; tenants ``default`` and ``other`` have their folders below it.
    Units of jobs fired here go to private queues nobody consumes (the tests cancel them)."""
    root = tmp_path / "roots"
    (root / "default").mkdir(parents=True)
    (root / "other").mkdir(parents=True)
    (root / "other" / "secret.txt").write_text("the other tenant's secret", encoding="utf-8")
    limits["SCHEDULE_FOLDER_ROOTS"] = json.dumps([str(root)])
    return root


def _files(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _schedule(api, folder: Path, pattern: str = "**/*") -> str:  # noqa: ANN001
    resp = api.post(
        "/v1/schedules",
        json={
            "name": f"s-{secrets.token_hex(4)}",
            "cron": CRON,
            "source": {"type": "folder", "path": str(folder), "pattern": pattern},
            "tasks": ["summarize"],
        },
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _fire_all() -> dict[str, tuple[str | None, str | None]]:
    """Run the tick of tonight's 02:00:05; returns schedule id -> (job id, error)."""
    from docbatch.worker.scheduler import tick

    tick(get_settings(), now=next_fire(CRON, utcnow()) + dt.timedelta(seconds=5))
    with new_session(get_settings()) as s:
        rows = s.execute(select(ScheduleRun.schedule_id, ScheduleRun.job_id, ScheduleRun.error))
        return {sid: (job, error) for sid, job, error in rows}


def _texts(job_id: str) -> list[str]:
    from docbatch.schema.tables import Document

    with new_session(get_settings()) as s:
        return list(s.scalars(select(Document.text).where(Document.job_id == job_id)))


def _cleanup(api, schedule_ids: list[str], runs: dict) -> None:  # noqa: ANN001
    for sid in schedule_ids:
        job_id = runs.get(sid, (None, None))[0]
        if job_id:
            api.post(f"/v1/jobs/{job_id}/cancel")
        api.delete(f"/v1/schedules/{sid}")


def test_an_unreadable_file_does_not_stop_the_other_schedules(api, roots):
    mine = roots / "default"
    # Files root itself cannot read: a link into /proc whose read fails with EIO, a dangling
    # link, a FIFO (which would block a plain open forever).
    eio = _files(mine / "eio", {"b.txt": "fine"})
    (eio / "a.txt").symlink_to("/proc/self/mem")
    dangling = _files(mine / "dangling", {"b.txt": "fine"})
    (dangling / "a.txt").symlink_to(dangling / "gone.txt")
    fifo = _files(mine / "fifo", {"b.txt": "fine"})
    os.mkfifo(fifo / "a.txt")
    good_folder = _files(mine / "good", {"doc.txt": "a good document"})
    bad = [_schedule(api, eio), _schedule(api, dangling), _schedule(api, fifo)]
    good = _schedule(api, good_folder)  # created last: it comes after the bad ones
    runs: dict = {}
    try:
        runs = _fire_all()
        job, error = runs.get(good, (None, None))
        assert job is not None and error is None, runs
        assert _texts(job) == ["a good document"]
        for sid in bad:
            job, error = runs[sid]
            assert job is None and error and "a.txt" in error, (sid, runs[sid])
        with new_session(get_settings()) as s:
            names = [j.name for j in s.scalars(select(Job).where(Job.id == runs[good][0]))]
        assert names, "the good schedule's job exists"
        # The failed periods are recorded, so the next tick does not try them again.
        again = _fire_all()
        assert {sid: again[sid] for sid in bad} == {sid: runs[sid] for sid in bad}
    finally:
        _cleanup(api, [*bad, good], runs)


def test_no_root_configured_means_no_folder_schedules(api, limits, tmp_path):
    limits["SCHEDULE_FOLDER_ROOTS"] = "[]"
    for path in ("/etc", str(tmp_path)):
        resp = api.post(
            "/v1/schedules",
            json={
                "name": f"etc-{secrets.token_hex(3)}",
                "cron": CRON,
                "source": {"type": "folder", "path": path},
                "tasks": ["summarize"],
            },
        )
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["field"] == "source"
        assert "DOCBATCH_SCHEDULE_FOLDER_ROOTS" in error["message"]


def test_a_tenant_reads_only_below_its_own_root(api, roots):
    for path in ("/etc", str(roots), str(roots / "other"), str(roots / "default/../other")):
        resp = api.post(
            "/v1/schedules",
            json={
                "name": f"out-{secrets.token_hex(3)}",
                "cron": CRON,
                "source": {"type": "folder", "path": path},
                "tasks": ["summarize"],
            },
        )
        assert resp.status_code == 422, (path, resp.text)
        error = resp.json()["error"]
        assert error["field"] == "source.path", error
        assert "DOCBATCH_SCHEDULE_FOLDER_ROOTS" in error["message"]


def test_links_out_of_the_tenant_folder_are_refused_at_every_read(api, roots):
    mine, theirs = roots / "default", roots / "other"
    # A symlinked file (to the host and to the other tenant's folder).
    linked = _files(mine / "linked", {"ok.txt": "mine"})
    (linked / "passwd.txt").symlink_to("/etc/passwd")
    linked2 = _files(mine / "linked2", {"ok.txt": "mine"})
    (linked2 / "secret.txt").symlink_to(theirs / "secret.txt")
    # A pattern through a symlinked directory.
    through = _files(mine / "through", {"ok.txt": "mine"})
    (through / "sub").symlink_to(theirs)
    # A subfolder that is real at creation and swapped for a link afterwards.
    swapped = _files(mine / "swapped", {"ok.txt": "mine"})
    # A link that stays inside the tenant's folder is fine.
    inside = _files(mine / "inside", {"ok.txt": "mine"})
    (inside / "alias.txt").symlink_to(inside / "ok.txt")
    ids = {
        "linked": _schedule(api, linked),
        "linked2": _schedule(api, linked2),
        "through": _schedule(api, through, pattern="sub/*.txt"),
        "swapped": _schedule(api, swapped),
        "inside": _schedule(api, inside),
    }
    (swapped / "ok.txt").unlink()
    swapped.rmdir()
    swapped.symlink_to(theirs)
    runs: dict = {}
    try:
        runs = _fire_all()
        for name in ("linked", "linked2", "through", "swapped"):
            job, error = runs[ids[name]]
            assert job is None, (name, _texts(job))
            assert error and "outside the folders this tenant may read" in error, (name, error)
            assert "root:" not in error and "secret" not in error.replace("secret.txt", "")
        job, error = runs[ids["inside"]]
        assert error is None and sorted(_texts(job)) == ["mine", "mine"]
    finally:
        _cleanup(api, list(ids.values()), runs)


def test_file_size_is_checked_before_the_file_is_read(api, roots, tmp_path):
    """A 400 MB (sparse) file over DOCBATCH_EXTRACT_MAX_BYTES is never read: the job takes
    it as a document that will fail alone at extraction, naming the limit, and the tick's
    process never holds it in memory (measured in a separate process, from the peak RSS)."""
    big = _files(roots / "default" / "big", {"small.txt": "small"})
    with (big / "huge.txt").open("wb") as fh:
        fh.truncate(400 * 1024 * 1024)
    sid = _schedule(api, big)
    script = (
        "import datetime as dt, resource, json\n"
        "from docbatch.domain.schedules import next_fire\n"
        "from docbatch.schema.settings import get_settings\n"
        "from docbatch.schema.tables import utcnow\n"
        "from docbatch.worker.scheduler import tick\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "now = next_fire('0 2 * * *', utcnow()) + dt.timedelta(seconds=5)\n"
        "fired = tick(get_settings(), now=now)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"mine = [f.error for f in fired if f.schedule_id == {sid!r}]\n"
        "print(json.dumps({'grew_kb': after - before, 'errors': mine}))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["errors"] == [None], report
        assert report["grew_kb"] < 100 * 1024, f"the tick read the file: {report}"
        job_id = _fire_all()[sid][0]
        from docbatch.schema.tables import DocumentFile

        with new_session(get_settings()) as s:
            stored = {f.name: f for f in s.scalars(select(DocumentFile).filter_by(job_id=job_id))}
        assert list(stored) == ["huge.txt"]  # small.txt is UTF-8 text: no extraction
        assert (stored["huge.txt"].bytes, stored["huge.txt"].blob_oid) == (400 * 1024**2, None)
        from docbatch.worker.extract.expand import too_big as _too_big

        assert "DOCBATCH_EXTRACT_MAX_BYTES" in _too_big(stored["huge.txt"], get_settings())
    finally:
        runs = _fire_all()
        _cleanup(api, [sid], runs)
