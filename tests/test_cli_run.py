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
