"""Originals stored once per tenant by content (issue 21): a schedule re-run over an
unchanged folder adds no large objects; the same bytes of another tenant are stored
apart; the bytes go with the last job naming them. Every test ends with every large
object owned by a row."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text

from docbatch.domain import deletion, originals
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.schedules import next_fire
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Original, ScheduleRun, utcnow
from docbatch.worker.deletion import delete_job
from tests.files import make_html
from tests.storage import job_rows, large_objects

pytestmark = pytest.mark.usefixtures("blobs_owned")

CRON = "0 3 * * *"
FILES = 20


@pytest.fixture
def folder(tmp_path: Path, limits, private_queues) -> Path:  # noqa: ANN001
    """A folder of the tenant ``default`` below a configured root; units of the jobs fired
    go to private queues nobody consumes."""
    root = tmp_path / "roots"
    inbox = root / "default" / "inbox"
    inbox.mkdir(parents=True)
    for i in range(FILES):
        (inbox / f"page-{i}.html").write_bytes(make_html(f"unchanged page {i}"))
    limits["SCHEDULE_FOLDER_ROOTS"] = json.dumps([str(root)])
    return inbox


def _fire(night: int) -> dict[str, str | None]:
    from docbatch.worker.scheduler import tick

    first = next_fire(CRON, utcnow())
    tick(get_settings(), now=first + dt.timedelta(days=night, seconds=5))
    with new_session(get_settings()) as s:
        return {
            str(p): job
            for p, job in s.execute(select(ScheduleRun.period_start, ScheduleRun.job_id))
        }


def _stored(folder: Path) -> int:
    """Large objects that hold this folder's bytes for tenant ``default`` (counted by their
    content, not over the whole database: other tests' background passes create and drop
    large objects of their own while this one runs)."""
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()]
    with new_session(get_settings()) as s:
        oids = s.scalars(
            select(Original.blob_oid).where(
                Original.tenant == "default", Original.sha256.in_(hashes)
            )
        ).all()
        if not oids:
            return 0
        return int(
            s.scalar(
                text("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = ANY(:oids)"),
                {"oids": list(oids)},
            )
            or 0
        )


def _delete(job_id: str) -> None:
    settings = get_settings()
    with unit_of_work(settings, publish=False) as s:
        deletion.request_delete(s, None, job_id, settings)
    assert delete_job(job_id, settings) > 0
    assert job_rows(job_id)["jobs"] == 0


def test_a_schedule_over_an_unchanged_folder_stores_its_files_once(api, folder):
    resp = api.post(
        "/v1/schedules",
        json={
            "name": "nightly-unchanged",
            "cron": CRON,
            "source": {"type": "folder", "path": str(folder), "pattern": "*.html"},
            "tasks": ["summarize"],
        },
    )
    assert resp.status_code == 201, resp.text
    assert _stored(folder) == 0
    stored = []
    for night in range(3):
        runs = _fire(night)
        stored.append(_stored(folder))
    assert stored == [FILES, FILES, FILES], "the second and third runs added no large objects"
    jobs_fired = [j for j in runs.values() if j is not None]
    assert len(jobs_fired) == 3
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()]
    with new_session(get_settings()) as s:
        refs = s.scalars(
            select(Original.refs).where(Original.tenant == "default", Original.sha256.in_(hashes))
        ).all()
    assert refs == [3] * FILES  # this folder's originals only: other tests share the tenant

    # The bytes stay while a job names them, and go with the last one.
    _delete(jobs_fired[0])
    _delete(jobs_fired[1])
    assert _stored(folder) == FILES
    _delete(jobs_fired[2])
    assert _stored(folder) == 0
    api.delete(f"/v1/schedules/{resp.json()['id']}")


def test_the_same_bytes_of_two_tenants_are_stored_apart(tmp_path: Path):
    paths = []
    for i in range(4):
        path = tmp_path / f"m{i}.html"
        path.write_bytes(make_html(f"member {i % 3}"))  # m3 repeats m0
        paths.append(path)
    before = large_objects()
    with transaction(get_settings()) as s:
        a = originals.store_paths(s, "tenant-a", paths)
    assert large_objects() == before + 3, "one copy per content"
    assert a[3][0] == a[0][0] and len({oid for oid, _, _ in a}) == 3
    with transaction(get_settings()) as s:
        again = originals.store_paths(s, "tenant-a", paths)
        b = originals.store_paths(s, "tenant-b", paths)
    assert large_objects() == before + 6, "tenant-a again adds nothing; tenant-b its own"
    assert [x[0] for x in again] == [x[0] for x in a]
    assert not {x[0] for x in b} & {x[0] for x in a}, "never shared across tenants"
    with transaction(get_settings()) as s:
        for stored in (a, again, b):
            originals.release(s, [oid for oid, _, _ in stored])
    assert large_objects() == before
