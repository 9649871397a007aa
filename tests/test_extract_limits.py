"""Archives and attachments through the whole stack, as a hostile tenant would send them:
a real api, a real ``docbatch worker --task extract`` (its sandbox child included), the
results read back over the api. What is inside a file is never dropped without a failed
document naming it, one budget holds for everything inside one upload, and a bomb is
refused at its declared size, before it is inflated."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import DocumentFile
from tests.files import (
    PAGES,
    make_email_with,
    make_pdf,
    make_stored_zip,
    make_tar,
    make_tar_gz_bomb,
    make_zip,
)
from tests.fixtures import WorkerProcess, read_ndjson


def _extract_worker(private_queues: str, **env: str) -> WorkerProcess:
    return WorkerProcess("extract", env={"DOCBATCH_QUEUE_PREFIX": private_queues, **env})


def _upload(api, files):
    parts = [("file", (name, data)) for name, data in files]
    resp = api.post("/v1/jobs", files=parts, data={"tasks": "summarize"})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _extracted(api, job_id: str, timeout: float = 120) -> dict[str, dict]:
    """Once every document's extraction is over (no model worker runs): custom_id -> its
    extract result."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        counts = job["counts"]["extract"]
        if counts["pending"] == 0:
            break
        time.sleep(0.3)
    else:
        raise TimeoutError(f"extraction not over after {timeout}s: {job}")
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    return {line["custom_id"]: line["results"]["extract"] for line in lines}


def _cancel(api, job_id: str) -> None:
    """Clean-up: the job's model units wait for a worker none of these tests starts."""
    api.post(f"/v1/jobs/{job_id}/cancel")


def test_archives_are_read_as_archives_and_no_member_is_dropped(api, private_queues):
    """A stored zip whose first KiB holds a PDF's ``%PDF-`` is the zip it is (it was
    read as one PDF, the other files gone); a tar's link and an e-mail's empty and
    forwarded attachments each become a document (they were dropped without a word)."""
    worker = _extract_worker(private_queues).wait_ready()
    forwarded = EmailMessage()
    forwarded["From"], forwarded["Subject"] = "bob@example.org", "Original report"
    forwarded.set_content("The original message body.")
    files = [
        (
            "bundle.zip",
            make_stored_zip(
                {
                    "a.pdf": make_pdf(PAGES[:1], title="zip a"),
                    "b.pdf": make_pdf(PAGES[1:2], title="zip b"),
                    "notes.txt": b"Notes about both reports.",
                }
            ),
        ),
        (
            "bundle.tar",
            make_tar({"c.pdf": make_pdf(PAGES[2:], title="tar c")}, links={"link": "/etc/passwd"}),
        ),
        ("mail.eml", make_email_with([("empty.txt", b""), ("forwarded.eml", forwarded)])),
    ]
    job_id = _upload(api, files)
    try:
        got = _extracted(api, job_id)
        assert set(got) == {
            "bundle.zip/a.pdf",
            "bundle.zip/b.pdf",
            "bundle.zip/notes.txt",
            "bundle.tar/c.pdf",
            "bundle.tar/link",
            "mail.eml",
            "mail.eml/empty.txt",
            "mail.eml/forwarded.eml",
        }, got
        for name in ("bundle.zip/a.pdf", "bundle.zip/b.pdf", "bundle.tar/c.pdf"):
            assert got[name]["status"] == "succeeded", got[name]
            assert got[name]["output"]["kind"] == "pdf" and got[name]["output"]["pages"] == [[0, 1]]
        assert got["bundle.zip/notes.txt"]["output"]["kind"] == "text"
        assert "links are not followed" in got["bundle.tar/link"]["error"]
        assert "empty (0 bytes)" in got["mail.eml/empty.txt"]["error"]
        assert got["mail.eml/forwarded.eml"]["output"]["metadata"]["subject"] == "Original report"
        assert got["mail.eml"]["output"]["attachments"] == [
            "mail.eml/empty.txt",
            "mail.eml/forwarded.eml",
        ]
    finally:
        _cancel(api, job_id)
        worker.stop()


def _distinct_text(i: int, size: int) -> bytes:
    line = f"Member {i} of the nested archive, line {{}}.\n"
    out, n = [], 0
    while sum(map(len, out)) < size:
        out.append(line.format(n).encode())
        n += 1
    return b"".join(out)[:size]


def test_nested_archives_share_one_budget_per_upload(api, private_queues):
    """With the unpacked-bytes limit at 10,000, a zip of five zips of 2,000 bytes each
    unpacked all five (each inner zip got a fresh budget); now the upload has one budget
    and the zip that breaks it fails, naming the limit."""
    worker = _extract_worker(
        private_queues, DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES="10000"
    ).wait_ready()
    inner = {f"inner{i}.zip": make_zip({f"part{i}.txt": _distinct_text(i, 2000)}) for i in range(5)}
    upload = make_zip(inner)
    job_id = _upload(api, [("outer.zip", upload)])
    try:
        got = _extracted(api, job_id)
        assert len(got) == 5, got  # every member is a document: extracted or failed
        unpacked = sum(len(z) for z in inner.values())  # the inner zips count too
        succeeded = [n for n, r in got.items() if r["status"] == "succeeded"]
        failed = {n: r["error"] for n, r in got.items() if r["status"] == "failed"}
        unpacked += sum(got[n]["output"]["bytes"] for n in succeeded)
        assert unpacked <= 10_000, (unpacked, got)
        assert failed, got
        for name, error in failed.items():
            assert name.startswith("outer.zip/inner") and name.endswith(".zip"), failed
            assert "DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES" in error, failed
            assert "nested ones included" in error
    finally:
        _cancel(api, job_id)
        worker.stop()


def _hwm_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_members_wait_on_disk_not_in_the_worker(api, private_queues):
    """An archive of 4 x 24 MB members: the worker process running the unit held all
    96 MB (and a pickled copy) until its write; now they wait on disk and stream into
    blobs, and the worker's peak memory barely moves."""
    worker = _extract_worker(
        private_queues, DOCBATCH_EXTRACT_ARCHIVE_MAX_RATIO="100000"
    ).wait_ready()
    size = 24 << 20
    pool = worker.children()
    before = {pid: _hwm_bytes(pid) for pid in pool}
    job_id = _upload(api, [("big.zip", make_zip({f"part{i}.bin": b"\0" * size for i in range(4)}))])
    try:
        got = _extracted(api, job_id, timeout=300)
        assert sorted(got) == [f"big.zip/part{i}.bin" for i in range(4)], got
        for result in got.values():  # zeros are no format docbatch reads, but all are kept
            assert "unsupported file type" in result["error"]
        with new_session(get_settings()) as s:
            stored = s.scalars(select(DocumentFile.bytes).where(DocumentFile.job_id == job_id))
            assert sorted(stored) == [size] * 4
        grew = max(_hwm_bytes(pid) - before[pid] for pid in pool)
        assert grew < 4 * size // 2, f"the worker's peak memory grew by {grew / 2**20:.0f} MiB"
    finally:
        _cancel(api, job_id)
        worker.stop()


def test_a_tar_gz_bomb_is_refused_at_its_declared_size(api, private_queues):
    """A 6 MB .tar.gz whose member declares 6 GiB: it was inflated whole before any size
    check (13 s of CPU, past this worker's 5 s limit); now its header is checked against
    the upload's budget first and it fails at once, naming the limit."""
    worker = _extract_worker(private_queues, DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS="5").wait_ready()
    bomb = make_tar_gz_bomb(6 << 30)
    job_id = _upload(api, [("bomb.tar.gz", bomb), ("after.txt", "Grüße".encode("cp1252"))])
    try:
        got = _extracted(api, job_id)
        error = got["bomb.tar.gz"]["error"]
        assert "DOCBATCH_EXTRACT_ARCHIVE_MAX_RATIO" in error and "zip bomb" in error, error
        assert got["after.txt"]["status"] == "succeeded"  # the worker went on
    finally:
        _cancel(api, job_id)
        worker.stop()


NUL_MAIL = (
    b"From: ada@example.org\r\nTo: ops@example.org\r\nSubject: a NUL inside\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nbefore=00after\r\n"
    b"--B\r\nContent-Type: text/plain\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''a%00b.txt\r\n\r\n"
    b"The attached notes.\r\n--B--\r\n"
)


def test_a_nul_in_an_email_body_or_attachment_name_is_stored_not_fatal(api, private_queues):
    """Postgres text holds no NUL: an e-mail body with one (quoted-printable =00) or an
    attachment named ``a%00b.txt`` made the unit's write fail, every time it was tried.
    Now the NUL becomes U+FFFD in the text and ``_`` in the name."""
    worker = _extract_worker(private_queues).wait_ready()
    job_id = _upload(api, [("nul.eml", NUL_MAIL)])
    try:
        got = _extracted(api, job_id, timeout=60)
        assert set(got) == {"nul.eml", "nul.eml/a_b.txt"}, got
        assert all(r["status"] == "succeeded" for r in got.values()), got
        with new_session(get_settings()) as s:
            from docbatch.schema.tables import Document

            text = s.scalar(
                select(Document.text).where(
                    Document.job_id == job_id, Document.custom_id == "nul.eml"
                )
            )
        assert text is not None and "before\ufffdafter" in text
    finally:
        _cancel(api, job_id)
        worker.stop()
