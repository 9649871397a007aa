"""The client commands as a user meets them: the real CLI as a subprocess against a real
api process. A failure is one line naming the problem and a non-zero exit, never a
traceback, and never an emptied output file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ROOT
from tests.procs import ApiProcess, free_port


@pytest.fixture(scope="module")
def live_api(api_key: str) -> Iterator[tuple[str, str]]:
    # Jobs made here go to queues no worker reads.
    api = ApiProcess({"DOCBATCH_QUEUE_PREFIX": f"cli{os.getpid()}"}, migrate=False)
    api.wait_ready()
    yield api.url, api_key
    api.stop()


def cli(*args: str, url: str, key: str, cwd: Path = ROOT, shell_tail: str = "") -> Any:
    env = {**os.environ, "DOCBATCH_API_URL": url, "DOCBATCH_API_KEY": key}
    command = [sys.executable, "-m", "docbatch.cli", *args]
    if shell_tail:  # e.g. "| head -n 1": run through a shell pipeline
        line = " ".join(f"'{c}'" for c in command) + " " + shell_tail
        return subprocess.run(
            ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def _one_line(result: Any) -> str:
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def _submit(url: str, key: str, tmp_path: Path, n: int) -> str:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"custom_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(n))
    )
    done = cli("submit", str(docs), "--task", "tags", url=url, key=key)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_results_of_an_unknown_job_leave_the_output_file_alone(live_api, tmp_path):
    url, key = live_api
    out = tmp_path / "out.jsonl"
    out.write_text("yesterday's results\n")
    done = cli("results", "job_typo", "-o", str(out), url=url, key=key)
    assert done.returncode != 0
    line = _one_line(done)
    assert "404" in line and "job job_typo not found" in line
    assert out.read_text() == "yesterday's results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"], "temp file left"


def test_bad_key_is_one_line_naming_it(live_api, tmp_path):
    url, _ = live_api
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    for args in (["results", "job_x", "-o", str(out)], ["status", "job_x"], ["cancel", "job_x"]):
        done = cli(*args, url=url, key="dbk_0123456789abcdef_" + "x" * 43)
        assert done.returncode != 0
        line = _one_line(done)
        assert "401" in line and "unknown API key" in line and "DOCBATCH_API_KEY" in line
    assert out.read_text() == "keep\n"


def test_api_down_is_one_line_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"custom_id": "a", "text": "x"}\n')
    for args in (
        ["results", "job_x", "-o", str(out)],
        ["results", "job_x"],
        ["status", "job_x"],
        ["cancel", "job_x"],
        ["submit", str(docs), "--task", "tags"],
    ):
        done = cli(*args, url=url, key="dbk_any")
        assert done.returncode == 5, args  # exitcodes.UNREACHABLE: a scheduler retries
        assert _one_line(done) == (
            f"docbatch: cannot reach the api at {url} (set --api-url or DOCBATCH_API_URL)"
        )
    assert out.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "out.jsonl"]


def test_results_replace_the_output_file_when_complete(live_api, tmp_path):
    url, key = live_api
    job = _submit(url, key, tmp_path, 5)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    done = cli("results", job, "-o", str(out), url=url, key=key)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"d{i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "out.jsonl"]
    status = cli("status", job, "--format", "json", url=url, key=key)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == job
    cancel = cli("cancel", job, "--format", "json", url=url, key=key)
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["status"] == "cancelled"


def test_results_piped_into_head_exit_quietly(live_api, tmp_path):
    url, key = live_api
    job = _submit(url, key, tmp_path, 5000)  # far more than a pipe buffer of results
    done = cli("results", job, url=url, key=key, cwd=ROOT, shell_tail="| head -n 1")
    assert done.returncode == 0
    assert done.stderr.strip() == "", done.stderr
    assert json.loads(done.stdout)["custom_id"] == "d0"
    cli("cancel", job, url=url, key=key)


def test_submit_of_a_missing_file_is_one_line(live_api, tmp_path):
    url, key = live_api
    done = cli("submit", str(tmp_path / "nope.jsonl"), "--task", "tags", url=url, key=key)
    assert done.returncode != 0
    assert "nope.jsonl" in _one_line(done)
