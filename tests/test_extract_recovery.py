"""The extract stage under faults, through the one unit runner: a worker killed mid-unit is
taken over, a file whose extraction the database refuses fails alone, an extract unit has
a time limit, and a cancel reaches inside an archive.

Real ``docbatch worker --task extract`` processes (prefork, their sandbox children), the
fake upper-casing summarize worker (tests/fakes.py) on private queues, real Postgres and
Redis; faults are triggered by what the database shows (a unit running), never a sleep.
"""

from __future__ import annotations

import os
import signal
import time
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import EXTRACT, Unit
from tests.fakeworkers import fake_worker_env
from tests.files import PAGES, make_long_pdf, make_pdf, make_zip
from tests.fixtures import WorkerProcess, read_ndjson, wait_for_job


def _upload(api, files: list[tuple[str, bytes]]) -> str:
    parts = [("file", (name, data)) for name, data in files]
    resp = api.post("/v1/jobs", files=parts, data={"tasks": "summarize"})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _results(api, job_id: str) -> dict[str, dict]:
    return {
        line["custom_id"]: line["results"]
        for line in read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    }


def _extract_units(job_id: str) -> list[Unit]:
    with new_session(get_settings()) as s:
        return list(
            s.scalars(
                select(Unit).where(Unit.job_id == job_id, Unit.task == EXTRACT).order_by(Unit.id)
            )
        )


def _wait_running(job_id: str, timeout: float = 120) -> Unit:
    """Until one of the job's extract units is running (claimed by a worker)."""
    deadline = time.monotonic() + timeout
    while True:
        running = [u for u in _extract_units(job_id) if u.state == "running"]
        if running:
            return running[0]
        assert time.monotonic() < deadline, [u.state for u in _extract_units(job_id)]
        time.sleep(0.02)


def _slow_archive(members: int) -> bytes:
    """A zip of ``members`` long PDFs (0.3-1.5 s of PDFium each); a text file leads, so that
    no PDF header shows in the zip's first bytes (detection is not what is tested here)."""
    slow = make_long_pdf(1000)
    files = {"readme.txt": b"Long reports follow. " * 200}
    files.update({f"part-{i:02d}.pdf": slow + f"%{i}\n".encode() for i in range(members)})
    return make_zip(files)


def _accounted(job: dict) -> None:
    for task, c in job["counts"].items():
        assert c["succeeded"] + c["failed"] + c["cancelled"] == c["total"], (task, c)


@pytest.fixture
def summarizer(private_queues):
    worker = WorkerProcess("summarize", env=fake_worker_env(private_queues)).wait_ready()
    yield worker
    worker.stop()


def _extractor(prefix: str, **env: str) -> WorkerProcess:
    return WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": prefix, **env}).wait_ready()


def test_extract_worker_killed_mid_unit_is_taken_over(api, private_queues, summarizer):
    """Issue 20 item 1: the pool process extracting a unit is SIGKILLed; the redelivered
    message claims the unit again (its lease died with the process) and the job ends."""
    extractor = _extractor(private_queues)
    try:
        slow = make_long_pdf(1000)  # 0.3-1.5 s of PDFium each: the kill lands mid-unit
        files = [(f"slow-{i}.pdf", slow + f"%{i}\n".encode()) for i in range(3)]
        files.append(("short.pdf", make_pdf(PAGES[:1], title="short")))
        job_id = _upload(api, files)
        unit = _wait_running(job_id)
        pid = int(unit.worker.rsplit(":", 1)[1])
        assert pid in extractor.children(), (unit.worker, extractor.children())
        os.kill(pid, signal.SIGKILL)  # no chance to close anything
        job = wait_for_job(api, job_id, timeout=180)
    finally:
        extractor.stop()
    assert job["status"] == "completed", job
    _accounted(job)
    (again,) = _extract_units(job_id)
    assert (again.state, again.attempts) == ("done", 2)
    results = _results(api, job_id)
    assert set(results) == {name for name, _ in files}
    for name, got in results.items():
        assert got["extract"]["status"] == got["summarize"]["status"] == "succeeded", (name, got)


def _email_with_nul_body() -> bytes:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = "ops@example.org"
    message["Subject"] = "A NUL in the body"
    message.set_content("before\x00after", cte="quoted-printable")
    return bytes(message)


def _email_with_nul_attachment_name() -> bytes:
    return (
        b"From: Ada <ada@example.org>\r\nTo: ops@example.org\r\nSubject: attached\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nThe body is fine.\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''a%00b.txt\r\n\r\n"
        b"The attachment's name holds a NUL.\r\n--XX--\r\n"
    )


def test_a_file_whose_extraction_cannot_be_stored_fails_alone(api, private_queues, summarizer):
    """Issue 20 item 1 without a kill: Postgres refuses a NUL in a document's text or
    name, so writing the unit raises. The unit is written again document by document:
    the file whose rows are refused ends alone (failed with the reason, or stored without
    the NUL), its neighbours in the same unit succeed, and the job ends."""
    extractor = _extractor(private_queues)
    try:
        files = [
            ("nul-body.eml", _email_with_nul_body()),
            ("nul-name.eml", _email_with_nul_attachment_name()),
            ("fine.pdf", make_pdf(PAGES, title="fine")),
        ]
        job_id = _upload(api, files)  # one extract unit holds all three
        job = wait_for_job(api, job_id, timeout=120)
    finally:
        extractor.stop()
    assert job["status"] in ("completed", "completed_with_errors"), job
    _accounted(job)
    assert [(u.state, u.attempts) for u in _extract_units(job_id)][0] == ("done", 1)
    results = _results(api, job_id)
    assert results["fine.pdf"]["extract"]["status"] == "succeeded"
    assert results["fine.pdf"]["summarize"]["status"] == "succeeded"
    for name in ("nul-body.eml", "nul-name.eml"):
        got = results[name]
        if got["extract"]["status"] == "failed":
            assert "could not be stored" in got["extract"]["error"], got
            assert "NUL" in got["extract"]["error"], got
            assert got["summarize"]["error"].startswith("extraction failed: "), got
        else:  # stored with the NUL taken out
            assert got["extract"]["status"] == "succeeded", got
            assert "\x00" not in got["summarize"]["output"]["summary"]


def test_extract_unit_past_its_time_limit_fails_with_the_reason(
    api, private_queues, summarizer, limits
):
    """Issue 20 item 4: an extract unit has a time limit like a model unit (the base plus
    DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS per file): an archive whose members each stay
    within their own limit but together run past the unit's is stopped, retried, and
    failed alone with the reason after DOCBATCH_MAX_UNIT_ATTEMPTS."""
    limits["EXTRACT_UNIT_FILES"] = "1"  # the archive and the PDF in units of their own
    extractor = _extractor(
        private_queues,
        DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS="1",
        DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS="2",
        DOCBATCH_UNIT_HEARTBEAT_SECONDS="0.5",
    )
    try:
        # Each member takes 0.3-1.5 s (machine and load); forty take far longer than 1 + 2 s.
        archive = _slow_archive(40)
        job_id = _upload(api, [("slow.zip", archive), ("ok.pdf", make_pdf(PAGES, title="ok"))])
        job = wait_for_job(api, job_id, timeout=240)
        log = extractor.log
    finally:
        extractor.stop()
    assert job["status"] == "completed_with_errors", job
    _accounted(job)
    results = _results(api, job_id)
    error = results["slow.zip"]["extract"]["error"]
    assert "time limit of 3 s" in error and "DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS=2" in error, error
    assert "gave up after 3 attempts" in error, error
    assert results["slow.zip"]["summarize"]["error"].startswith("extraction failed: ")
    assert results["ok.pdf"]["summarize"]["status"] == "succeeded"
    assert log.count("replacing this worker process") >= 3, log[-3000:]


def test_cancel_reaches_inside_an_archive(api, private_queues):
    """Issue 20 item 4: cancel is checked between an archive's members, not only between
    top-level files: a job cancelled while its extract worker is inside a long archive
    ends within seconds, not when the whole archive has been read."""
    extractor = _extractor(private_queues)
    try:
        archive = _slow_archive(80)  # 25 s or more to read, however fast the machine
        job_id = _upload(api, [("big.zip", archive)])
        _wait_running(job_id)
        cancelled_at = time.monotonic()
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        job = wait_for_job(api, job_id, timeout=120)
        took = time.monotonic() - cancelled_at
    finally:
        extractor.stop()
    assert job["status"] == "cancelled", job
    _accounted(job)
    assert took < 10, f"the cancel took {took:.1f} s: the archive was read to its end"
    ((state, attempts),) = [(u.state, u.attempts) for u in _extract_units(job_id)]
    assert (state, attempts) == ("cancelled", 1)
