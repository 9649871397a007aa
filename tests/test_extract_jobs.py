"""Files through the whole stack: a multipart upload of real files to the api, a real
``docbatch worker --task extract`` (its sandbox child included) and a model worker (the
upper-casing fake on a private queue), results read back over the api."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from docbatch.domain import blobs
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import DocumentFile
from tests.fakeworkers import fake_worker_env
from tests.files import (
    HTML,
    PAGES,
    make_docx,
    make_email,
    make_pdf,
    make_tar_gz,
    make_zip,
    make_zip_bomb,
)
from tests.fixtures import WorkerProcess, read_ndjson, wait_for_job


@pytest.fixture
def file_workers(private_queues):
    """An extract worker and the fake summarize worker, on this test's queues."""
    started = [
        WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": private_queues}),
        WorkerProcess("summarize", env=fake_worker_env(private_queues)),
    ]
    for w in started:
        w.wait_ready()
    yield started
    for w in started:
        w.stop()


def _by_id(api, job_id):
    return {
        line["custom_id"]: line["results"]
        for line in read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    }


def _upload(api, files, **fields):
    parts = [("file", (name, data)) for name, data in files]
    return api.post("/v1/jobs", files=parts, data={"tasks": "summarize", **fields})


def test_real_files_become_documents_with_text_pages_and_reasons(api, file_workers):
    pdf = make_pdf(PAGES)
    report = make_pdf(PAGES[:1])
    files = [
        ("reports/three-pages.pdf", pdf),
        ("notes.docx", make_docx()),
        ("page.html", HTML.encode()),
        ("mail.eml", make_email(report)),
        ("inbox.zip", make_zip({"a.pdf": make_pdf(PAGES[2:]), "sub/b.txt": b"Plain text."})),
        ("legacy.txt", "Grüße aus Köln, Straße und Übermut.".encode("cp1252")),
        ("ok.txt", b"Already UTF-8 text."),
        ("encrypted.pdf", make_pdf(PAGES, owner_password="o", user_password="secret")),
        ("corrupt.pdf", pdf[:400]),
        ("empty.pdf", b""),
        ("blob.bin", bytes(range(256)) * 8),
        ("bomb.zip", make_zip_bomb()),
    ]
    resp = _upload(api, files, name="files")
    assert resp.status_code == 202, resp.text
    job = wait_for_job(api, resp.json()["id"], timeout=180)
    assert job["status"] == "completed_with_errors", job
    results = _by_id(api, job["id"])
    # The archive is replaced by its files; the e-mail's attachment is a document too.
    assert "inbox.zip" not in results
    assert {"inbox.zip/a.pdf", "inbox.zip/sub/b.txt", "mail.eml/report.pdf"} <= set(results)
    assert job["documents"] == len(results) == len(files) - 1 + 2 + 1
    for task, counts in job["counts"].items():
        assert counts["succeeded"] + counts["failed"] == counts["total"], (task, counts)
    assert job["counts"]["extract"]["total"] == len(results)

    pdf_result = results["reports/three-pages.pdf"]
    extract = pdf_result["extract"]["output"]
    assert extract["kind"] == "pdf" and extract["library"].startswith("pypdfium2 ")
    assert [p for _, p in extract["pages"]] == [1, 2, 3]
    assert extract["sha256"] == hashlib.sha256(pdf).hexdigest()
    summary = pdf_result["summarize"]["output"]["summary"]
    assert PAGES[1].upper().split(".")[0] in summary  # the fake upper-cases the text
    assert results["notes.docx"]["extract"]["output"]["sections"][0][1] == "Networking"
    html = results["page.html"]["summarize"]["output"]["summary"]
    assert "SERVERS LISTEN ON A PORT" in html and "COOKIE SETTINGS" not in html
    mail = results["mail.eml"]["extract"]["output"]
    assert mail["metadata"]["subject"] == "Nightly report"
    assert mail["attachments"] == ["mail.eml/report.pdf"]
    attachment = results["mail.eml/report.pdf"]["extract"]["output"]
    assert attachment["parent"] == "mail.eml" and attachment["kind"] == "pdf"
    assert results["inbox.zip/a.pdf"]["extract"]["output"]["archive"] == "inbox.zip"
    assert "GRÜSSE" in results["legacy.txt"]["summarize"]["output"]["summary"].replace("ß", "SS")
    inline = results["ok.txt"]["extract"]["output"]
    assert inline == {"kind": "text", "inline": True, "chars": len("Already UTF-8 text.")}
    assert results["ok.txt"]["summarize"]["status"] == "succeeded"

    reasons = {
        "encrypted.pdf": "encrypted",
        "corrupt.pdf": "damaged",
        "empty.pdf": "empty (0 bytes)",
        "blob.bin": "unsupported file type",
        "bomb.zip": "zip bomb",
    }
    for name, reason in reasons.items():
        got = results[name]
        assert got["extract"]["status"] == "failed" and reason in got["extract"]["error"], got
        assert got["summarize"]["status"] == "failed"
        assert got["summarize"]["error"].startswith("extraction failed: "), got
        assert reason in got["summarize"]["error"]
    errors = {line["custom_id"] for line in read_ndjson(api.get(f"/v1/jobs/{job['id']}/errors"))}
    assert errors == set(reasons)

    # The originals are kept, with their sha256: the attachment's bytes are the report's.
    with new_session(get_settings()) as s:
        stored = {f.name: f for f in s.query(DocumentFile).filter_by(job_id=job["id"])}
    attached = stored["mail.eml/report.pdf"]
    assert attached.sha256 == hashlib.sha256(report).hexdigest()
    assert b"".join(blobs.read(attached.blob_oid, get_settings())) == report
    assert attached.parent_document_id is not None
    assert stored["empty.pdf"].bytes == 0


def test_the_same_bytes_again_reuse_their_extraction(api, file_workers):
    files = [
        ("again/a.pdf", make_pdf(PAGES[:2])),
        ("again/b.tar.gz", make_tar_gz({"c.html": HTML.encode()})),
    ]
    first = wait_for_job(api, _upload(api, files).json()["id"], timeout=120)
    second = wait_for_job(api, _upload(api, files).json()["id"], timeout=120)
    assert first["status"] == second["status"] == "completed", (first["counts"], second["counts"])
    one, two = _by_id(api, first["id"]), _by_id(api, second["id"])
    assert set(one) == set(two) == {"again/a.pdf", "again/b.tar.gz/c.html"}
    reused = two["again/a.pdf"]["extract"]
    assert reused["output"]["reused_from"] == first["id"]
    assert reused["output"]["pages"] == one["again/a.pdf"]["extract"]["output"]["pages"]
    assert two["again/a.pdf"]["summarize"] == one["again/a.pdf"]["summarize"]
    assert second["counts"]["extract"]["reused"] >= 1


def _worker(private_queues, **env):
    w = WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": private_queues, **env})
    return w.wait_ready()


def test_time_and_page_limits_fail_their_file_alone(api, private_queues):
    from tests.files import make_long_pdf

    extract_worker = _worker(
        private_queues,
        DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS="0.5",
        DOCBATCH_EXTRACT_MAX_PAGES="5000",
    )
    model = WorkerProcess("summarize", env=fake_worker_env(private_queues)).wait_ready()
    try:
        files = [
            ("slow.pdf", make_long_pdf(4900)),  # about 1.5 s of PDFium: over the time limit
            ("long.pdf", make_long_pdf(6000)),
            ("after.pdf", make_pdf(PAGES[:1])),  # the sandbox child was replaced: this works
        ]
        job = wait_for_job(api, _upload(api, files).json()["id"], timeout=120)
        results = _by_id(api, job["id"])
        slow, long, after = (results[n]["extract"] for n in ("slow.pdf", "long.pdf", "after.pdf"))
        assert "longer than 0.5 s (DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS)" in slow["error"], slow
        assert "6000 pages; the limit is 5000 (DOCBATCH_EXTRACT_MAX_PAGES)" in long["error"], long
        assert after["status"] == "succeeded"
        assert results["after.pdf"]["summarize"]["status"] == "succeeded"
        assert job["status"] == "completed_with_errors"
    finally:
        extract_worker.stop()
        model.stop()


@pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract not installed")
def test_scanned_pages_through_ocr_when_enabled(api, private_queues):
    from tests.files import make_scan

    extract_worker = _worker(private_queues, DOCBATCH_EXTRACT_OCR="true")
    model = WorkerProcess("summarize", env=fake_worker_env(private_queues)).wait_ready()
    try:
        job = wait_for_job(api, _upload(api, [("scan.pdf", make_scan())]).json()["id"])
        [line] = _by_id(api, job["id"]).values()
        assert "tesseract" in line["extract"]["output"]["library"], line
        assert line["extract"]["output"]["metadata"]["ocr_pages"] == 1
        assert "SOCKETS SEND BYTES" in line["summarize"]["output"]["summary"]
    finally:
        extract_worker.stop()
        model.stop()


def test_cancel_before_extraction_closes_the_waiting_model_units(api, private_queues):
    """No extract worker runs: the job's model units wait; a cancel ends them all."""
    files = [(f"c{i}.pdf", make_pdf(PAGES[:1])) for i in range(20)]
    job = _upload(api, files).json()
    counts = job["counts"]
    assert counts["extract"]["pending"] == 20 and counts["summarize"]["pending"] == 20, counts
    api.post(f"/v1/jobs/{job['id']}/cancel")
    job = wait_for_job(api, job["id"], timeout=60)
    assert job["status"] == "cancelled"
    for counts in job["counts"].values():
        assert counts["cancelled"] == counts["total"] == 20, job["counts"]
