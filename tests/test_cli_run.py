"""`docbatch run`: the embedded default (SQLite + filesystem broker), as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures import CORPUS, ROOT


def test_docbatch_run_on_jsonl_and_markdown(tmp_path):
    docs = CORPUS / "stdlib-docs.jsonl"
    subset = tmp_path / "docs.jsonl"
    subset.write_text("".join(docs.read_text().splitlines(keepends=True)[:12]))
    note = tmp_path / "note.md"
    note.write_text("# Sockets\n\nOpen a TCP connection. Send bytes. Close it when done.\n")
    out = tmp_path / "out.jsonl"
    # No DOCBATCH_DATABASE_URL/BROKER_URL from the test run: `run` brings its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "docbatch.cli",
            "run",
            str(subset),
            str(note),
            "--task",
            "tags",
            "--task",
            "summarize",
            "-o",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "completed: 13 documents" in proc.stderr
    assert "[##############################] 26/26" in proc.stderr  # the progress bar
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 13
    assert lines[-1]["custom_id"] == str(note)
    for line in lines:
        assert line["results"]["tags"]["status"] == "succeeded"
        assert line["results"]["summarize"]["output"]["summary"]
    assert (tmp_path / "work" / "docbatch.db").exists()


def test_docbatch_run_on_a_folder_of_real_files(tmp_path):
    """`docbatch run ./inbox --task summarize`: PDFs, a Word file, an e-mail with a PDF
    attached and a broken PDF; the real extractive summarizer; page-aware spans."""
    from tests.files import PAGES, make_docx, make_email, make_pdf

    inbox = tmp_path / "inbox"
    (inbox / "reports").mkdir(parents=True)
    long_pages = [f"{p} " * 6 for p in PAGES]
    (inbox / "reports" / "q3.pdf").write_bytes(make_pdf(long_pages))
    (inbox / "notes.docx").write_bytes(make_docx())
    (inbox / "mail.eml").write_bytes(make_email(make_pdf(PAGES[:1])))
    (inbox / "broken.pdf").write_bytes(make_pdf(PAGES)[:300])
    (inbox / ".DS_Store").write_bytes(b"\0\1hidden")
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "run", str(inbox), "--task", "summarize"]
        + ["-o", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # one broken file: completed with errors
    assert "completed_with_errors: 5 documents" in proc.stderr, proc.stderr[-3000:]
    lines = {x["custom_id"]: x["results"] for x in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {
        "reports/q3.pdf",
        "notes.docx",
        "mail.eml",
        "mail.eml/report.pdf",
        "broken.pdf",
    }
    q3 = lines["reports/q3.pdf"]["summarize"]["output"]
    assert q3["summary"] and {s["page"] for s in q3["spans"]} <= {1, 2, 3}
    pages = [p for _, p in lines["reports/q3.pdf"]["extract"]["output"]["pages"]]
    assert pages == [1, 2, 3]
    sections = {s["section"] for s in lines["notes.docx"]["summarize"]["output"]["spans"]}
    assert sections <= {"Networking", "Data formats"}
    assert lines["mail.eml/report.pdf"]["summarize"]["status"] == "succeeded"
    broken = lines["broken.pdf"]
    assert broken["extract"]["status"] == "failed" and "damaged" in broken["extract"]["error"]
    assert broken["summarize"]["error"].startswith("extraction failed: the PDF is damaged")


def test_the_example_files_shipped_with_the_repository_all_come_out(tmp_path):
    """examples/files (what the README points a new user at) needs nothing outside the clone:
    every file and the e-mail's attachment becomes a document with tags."""
    files = ROOT / "examples" / "files"
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "run", str(files), "--task", "tags"]
        + ["-o", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {x["custom_id"]: x["results"] for x in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {
        "stdlib-docs-1.pdf",
        "stdlib-docs-2.pdf",
        "networking.docx",
        "standard-library.html",
        "nightly-report.eml",
        "nightly-report.eml/report.pdf",
    }
    for name, results in lines.items():
        assert results["tags"]["status"] == "succeeded", (name, results)
        assert results["tags"]["output"]["tags"], name
