"""Scheduled jobs: the api's validation, exactly-once firing under two real beats, and
result reuse across nightly runs (real Postgres, Redis, beat and worker processes; the
fake upper-casing handler at the model seam)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from docbatch.domain.schedules import next_fire
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, Result, ScheduleRun, utcnow
from tests.fixtures import (
    ARTIFACTS,
    WorkerProcess,
    read_ndjson,
    spawn,
    stop_process,
    wait_for_job,
)
from tests.settings_env import override

FAKE = "tests.fakes:UpperHandler"


@pytest.fixture(scope="module", autouse=True)
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The schedule folder root for this module, in effect in this process and in the
    workers it starts; tenant ``default`` reads below ``<root>/default``."""
    root = tmp_path_factory.mktemp("schedule-roots")
    with override(schedule_folder_roots=json.dumps([str(root)])):
        yield root


@pytest.fixture(scope="module")
def prefix(folder_root: Path) -> Iterator[str]:
    """A private queue prefix for this module's fake workers, in effect in this process too."""
    value = f"sched{secrets.token_hex(3)}"
    with override(queue_prefix=value):
        yield value


@pytest.fixture(scope="module")
def fake_workers(prefix: str) -> Iterator[list[WorkerProcess]]:
    """Two fake summarize workers; both consume the maintenance queue (ticks race)."""
    env = {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE}
    started = [WorkerProcess("summarize", env=env, name=f"sched{i}") for i in range(2)]
    for w in started:
        w.wait_ready()
    yield started
    for w in started:
        w.stop()


def _folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    """A folder of ``files`` (text, or the bytes of a real file) below tenant
    ``default``'s schedule root."""
    base = Path(get_settings().schedule_folder_roots[0]) / "default"
    root = base / f"{tmp_path.name}-inbox"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def test_schedule_api_validates_and_round_trips(api, tmp_path):
    folder = _folder(tmp_path, {"a.txt": "alpha"})
    good = {
        "name": f"nightly-{secrets.token_hex(3)}",
        "cron": "0 2 * * *",
        "source": {"type": "folder", "path": str(folder)},
        "tasks": [{"type": "summarize"}],
    }
    bad_cases = [
        ({"cron": "0 25 * * *"}, "cron"),
        ({"cron": "0 2 * *"}, "cron"),
        ({"source": {"type": "folder", "path": "relative/dir"}}, "source.path"),
        ({"source": {"type": "ftp", "path": "/x"}}, "source.type"),
        ({"tasks": [{"type": "sumarize"}]}, "tasks[0].type"),
        ({"tasks": [{"type": "tags", "top_k": 0}]}, "tasks[0].top_k"),
        ({"reuse_results": "yes"}, "reuse_results"),
    ]
    for change, field in bad_cases:
        resp = api.post("/v1/schedules", json={**good, **change})
        assert resp.status_code == 422, (change, resp.text)
        assert resp.json()["error"]["field"] == field, (change, resp.json())
    names = [x["name"] for x in api.get("/v1/schedules").json()["data"]]
    assert good["name"] not in names, "a rejected schedule was stored"

    created = api.post("/v1/schedules", json=good)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["cron"] == "0 2 * * *" and body["reuse_results"] is True
    assert body["next_run_at"].endswith(("02:00:00Z", "02:00:00+00:00"))
    assert api.post("/v1/schedules", json=good).status_code == 409
    assert api.get(f"/v1/schedules/{good['name']}").json()["id"] == body["id"]
    listed = [s["id"] for s in api.get("/v1/schedules").json()["data"]]
    assert listed.count(body["id"]) == 1  # other tests' schedules of the tenant may be listed
    assert api.delete(f"/v1/schedules/{body['id']}").status_code == 204
    assert api.get(f"/v1/schedules/{body['id']}").status_code == 404


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.3)


def _runs(schedule_id: str) -> list[ScheduleRun]:
    with new_session(get_settings()) as s:
        return list(
            s.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.period_start)
            )
        )


def test_two_beats_fire_each_period_exactly_once(api, fake_workers, prefix, tmp_path):
    folder = _folder(tmp_path, {"a.txt": "alpha one", "sub/b.md": "bravo two", "c.txt": "x y"})
    name = f"every4s-{secrets.token_hex(3)}"
    resp = api.post(
        "/v1/schedules",
        json={
            "name": name,
            "cron": "* * * * * */4",  # every 4 seconds: a sixth, seconds field
            "source": {"type": "folder", "path": str(folder)},
            "tasks": ["summarize"],
        },
    )
    assert resp.status_code == 201, resp.text
    schedule_id = resp.json()["id"]
    env = {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_SCHEDULE_TICK_SECONDS": "1"}
    beats = []
    for i in range(2):
        log = f"beat-{i}-{time.monotonic_ns()}.log"
        proc = spawn(["beat", "--schedule", str(tmp_path / f"beat-{i}")], log, env)
        beats.append((proc, ARTIFACTS / log))
    try:
        _wait(lambda: len(_runs(schedule_id)) >= 3, 90, "three periods did not fire")
    finally:
        api.delete(f"/v1/schedules/{schedule_id}")  # keeps its runs' jobs, stops firing
        for proc, _ in beats:
            stop_process(proc)
    for proc, log in beats:
        text = log.read_text(errors="replace")
        assert text.count("Sending due task schedule-tick") >= 3, (proc.args, text[-2000:])

    with new_session(get_settings()) as s:
        jobs = s.scalars(select(Job).where(Job.name.like(f"{name} %"))).all()
    # The schedule row is gone (its runs cascade); the jobs are what a user sees.
    stamps = sorted(j.name.removeprefix(f"{name} ") for j in jobs)
    assert len(stamps) >= 3
    assert len(stamps) == len(set(stamps)), f"a period fired twice: {stamps}"
    periods = [dt.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in stamps]
    assert all(p.second % 4 == 0 and p.microsecond == 0 for p in periods), stamps
    for job in jobs:
        done = wait_for_job(api, job.id, timeout=120)
        assert done["status"] == "completed", done
        assert done["counts"]["summarize"]["total"] == 3
    # Reuse is on by default for schedules: only the first run computed anything.
    first, *later = sorted(jobs, key=lambda j: j.name)
    assert api.get(f"/v1/jobs/{first.id}").json()["counts"]["summarize"]["reused"] == 0
    for job in later:
        assert api.get(f"/v1/jobs/{job.id}").json()["counts"]["summarize"]["reused"] == 3


def test_a_beat_over_a_mixed_folder_extracts_then_reuses(api, fake_workers, prefix, tmp_path):
    """The nightly folder of PDFs, Word files, web pages and e-mails, through a real beat,
    a real extract worker and the model workers: every file ends with its text or its
    reason, and the next period extracts nothing again."""
    from tests.files import PAGES, make_docx, make_email, make_html, make_pdf, make_zip

    # Unique bytes: other tests extract the same texts, and extraction is reused by sha256.
    stamp = secrets.token_hex(4)
    pdf = make_pdf(PAGES, title=stamp)
    folder = _folder(
        tmp_path,
        {
            "reports/three-pages.pdf": pdf,
            "notes.docx": make_docx(title=stamp),
            "saved/page.html": make_html(stamp),
            "mail.eml": make_email(make_pdf(PAGES[:1], title=stamp)),
            "bundle.zip": make_zip({"inner.pdf": make_pdf(PAGES[2:], title=stamp)}),
            "readme.txt": "Plain UTF-8 notes.",
            "broken.pdf": pdf[:300],
        },
    )
    name = f"mixed-{secrets.token_hex(3)}"
    resp = api.post(
        "/v1/schedules",
        json={
            "name": name,
            "cron": "* * * * * */6",
            "source": {"type": "folder", "path": str(folder)},
            "tasks": ["summarize"],
        },
    )
    assert resp.status_code == 201, resp.text
    schedule_id = resp.json()["id"]
    env = {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_SCHEDULE_TICK_SECONDS": "1"}
    extractor = WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": prefix}).wait_ready()
    beat = spawn(["beat", "--schedule", str(tmp_path / "beat")], f"beat-mixed-{name}.log", env)
    try:
        [run] = _wait(lambda: _runs(schedule_id)[:1], 60, "no period fired")
        first = wait_for_job(api, run.job_id, timeout=180)
        done = utcnow()
        later = _wait(
            lambda: [r for r in _runs(schedule_id) if r.period_start > done][:1],
            60,
            "no period fired after the first job ended",
        )
        api.delete(f"/v1/schedules/{schedule_id}")
        second = wait_for_job(api, later[0].job_id, timeout=180)
    finally:
        stop_process(beat)
        extractor.stop()

    expected = {
        "reports/three-pages.pdf",
        "notes.docx",
        "saved/page.html",
        "mail.eml",
        "mail.eml/report.pdf",
        "bundle.zip/inner.pdf",
        "readme.txt",
        "broken.pdf",
    }
    for job in (first, second):
        assert job["status"] == "completed_with_errors", job
        lines = {
            x["custom_id"]: x["results"]
            for x in read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
        }
        assert set(lines) == expected, sorted(lines)
        assert "damaged" in lines["broken.pdf"]["summarize"]["error"], lines["broken.pdf"]
        ok = expected - {"broken.pdf"}
        assert all(lines[c]["summarize"]["status"] == "succeeded" for c in ok), lines
        pdf_out = lines["reports/three-pages.pdf"]
        assert [p for _, p in pdf_out["extract"]["output"]["pages"]] == [1, 2, 3]
        assert PAGES[2].upper().split(".")[0] in pdf_out["summarize"]["output"]["summary"]
    # The second period found the same bytes: their extraction and summaries are reused.
    # An e-mail or archive (whose parts become documents of their own) is extracted again,
    # its parts' summaries are reused; a failed file is tried again.
    assert first["counts"]["extract"]["reused"] == 0
    again = {
        x["custom_id"]: x["results"]
        for x in read_ndjson(api.get(f"/v1/jobs/{second['id']}/results"))
    }
    extracted_before = {
        c for c, r in again.items() if (r["extract"].get("output") or {}).get("reused_from")
    }
    assert extracted_before == {"reports/three-pages.pdf", "notes.docx", "saved/page.html"}
    assert second["counts"]["summarize"]["reused"] == 7  # every document but the broken one
    assert second["counts"]["summarize"]["chunks"] == 0, "nothing was summarized again"


def test_racing_firings_of_one_period_make_one_job(api, prefix, tmp_path):
    """Eight transactions fire the same period at once (what many beats and tick workers
    amount to): exactly one creates a job, the others see the claim and back off."""
    import threading

    from docbatch.domain import schedules
    from docbatch.domain.outbox import unit_of_work
    from docbatch.schema.tables import Schedule

    folder = _folder(tmp_path, {"a.txt": "alpha"})
    name = f"race-{secrets.token_hex(3)}"
    schedule_id = api.post(
        "/v1/schedules",
        json={
            "name": name,
            "cron": "0 2 * * *",
            "source": {"path": str(folder)},
            "tasks": ["tags"],
        },
    ).json()["id"]
    period = next_fire("0 2 * * *", utcnow())
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def racer(i: int) -> None:
        with unit_of_work(get_settings()) as s:
            schedule = s.get(Schedule, schedule_id)
            barrier.wait()
            firing = schedules.fire(s, get_settings(), schedule, period, f"racer-{i}")
            outcomes.append(firing.job.job.id if firing and firing.job else None)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [x for x in outcomes if x]
    assert len(outcomes) == 8 and len(winners) == 1, outcomes
    with new_session(get_settings()) as s:
        assert s.scalars(select(Job.id).where(Job.name.like(f"{name} %"))).all() == winners
    api.delete(f"/v1/schedules/{schedule_id}")
    # Its units were never published (no worker for them here): close them.
    assert api.post(f"/v1/jobs/{winners[0]}/cancel").json()["status"] == "cancelled"


def _outputs(job_id: str) -> dict[str, tuple[bool, str]]:
    from docbatch.schema.tables import Document

    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Document.custom_id, Result.reused, Result.output)
            .join(Result, Result.document_id == Document.id)
            .where(Result.job_id == job_id)
        ).all()
    return {cid: (bool(reused), out["summary"]) for cid, reused, out in rows}


def test_nightly_rerun_reuses_unchanged_documents(api, fake_workers, tmp_path):
    from docbatch.worker.scheduler import tick

    files = {f"doc{i}.txt": f"document number {i} says hello" for i in range(4)}
    files["notes/extra.md"] = "a markdown note"
    folder = _folder(tmp_path, files)
    name = f"nightly-{secrets.token_hex(3)}"
    resp = api.post(
        "/v1/schedules",
        json={
            "name": name,
            "cron": "0 2 * * *",
            "source": {"type": "folder", "path": str(folder), "pattern": "**/*"},
            "tasks": [{"type": "summarize", "max_sentences": 2}],
        },
    )
    schedule_id = resp.json()["id"]
    night = next_fire("0 2 * * *", utcnow())

    def run_night(n: int) -> dict:
        # The tick beat would send, at 02:00:05 of night n.
        fired = tick(get_settings(), now=night + dt.timedelta(days=n, seconds=5))
        mine = [f for f in fired if f.schedule_id == schedule_id]
        assert len(mine) == 1 and mine[0].job is not None, fired
        again = tick(get_settings(), now=night + dt.timedelta(days=n, seconds=9))
        assert all(f.schedule_id != schedule_id for f in again), "fired twice in one period"
        return wait_for_job(api, mine[0].job.job.id, timeout=120)

    first = run_night(0)
    counts = first["counts"]["summarize"]
    assert (counts["succeeded"], counts["reused"]) == (5, 0)
    assert counts["chunks"] >= 5

    second = run_night(1)
    counts = second["counts"]["summarize"]
    assert (counts["succeeded"], counts["reused"], counts["chunks"]) == (5, 5, 0), counts
    outputs = _outputs(second["id"])
    assert outputs["notes/extra.md"] == (True, "A MARKDOWN NOTE")

    (folder / "doc2.txt").write_text("document two was edited", encoding="utf-8")
    third = run_night(2)
    counts = third["counts"]["summarize"]
    assert (counts["succeeded"], counts["reused"]) == (5, 4), counts
    assert counts["chunks"] == 1, "only the changed file should have been computed"
    outputs = _outputs(third["id"])
    assert outputs["doc2.txt"] == (False, "DOCUMENT TWO WAS EDITED")
    assert outputs["doc3.txt"] == (True, "DOCUMENT NUMBER 3 SAYS HELLO")
    line = next(
        x for x in api.get(f"/v1/jobs/{third['id']}/results").text.splitlines() if "doc3" in x
    )
    assert first["id"] in line, "a reused result names the job that computed it"
    api.delete(f"/v1/schedules/{schedule_id}")


def test_api_jobs_opt_in_and_parameters_must_match(api, fake_workers):
    docs = [
        {"custom_id": f"d{i}", "text": f"reuse me {i} {secrets.token_hex(4)}"} for i in range(6)
    ]

    def submit(reuse: bool, sentences: int) -> dict:
        resp = api.post(
            "/v1/jobs",
            json={
                "tasks": [{"type": "summarize", "max_sentences": sentences}],
                "documents": docs,
                "reuse_results": reuse,
            },
        )
        assert resp.status_code == 202, resp.text
        return wait_for_job(api, resp.json()["id"], timeout=120)["counts"]["summarize"]

    assert submit(False, 3)["reused"] == 0
    assert submit(False, 3)["reused"] == 0, "reuse is opt-in for api jobs"
    assert submit(True, 3)["reused"] == 6
    assert submit(True, 4)["reused"] == 0, "different parameters must not reuse"
    bad = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs, "reuse_results": 1})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "reuse_results"


def test_a_period_over_the_tenants_quota_fails_with_the_reason_on_the_schedule(api, tmp_path):
    from docbatch.cli import main as cli

    folder = _folder(tmp_path, {"a.txt": "alpha", "b.txt": "beta"})
    schedule_id = api.post(
        "/v1/schedules",
        json={
            "name": f"quota-{secrets.token_hex(3)}",
            "cron": "0 2 * * *",
            "source": {"path": str(folder)},
            "tasks": ["tags"],
        },
    ).json()["id"]
    assert cli(["tenants", "set-limits", "default", "--max-documents-per-day", "1"]) == 0
    try:
        run = api.post(f"/v1/schedules/{schedule_id}/run")
    finally:
        assert cli(["tenants", "set-limits", "default", "--max-documents-per-day", "default"]) == 0
    assert run.status_code == 201, run.text
    latest = api.get(f"/v1/schedules/{schedule_id}/runs/latest").json()
    assert latest["job_id"] is None, latest
    assert "max_documents_per_day" in latest["error"], latest
    api.delete(f"/v1/schedules/{schedule_id}")
