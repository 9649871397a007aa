"""The dashboard in a real headless Chromium against a real ``docbatch api`` (uvicorn) and
worker; also the ``docbatch schedules`` CLI against the same live api.

Chromium renders /ui and /ui/jobs/<id> after their JS polled the JSON api; the test
reads the rendered DOM (--dump-dom) and saves screenshots to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from docbatch.processes import free_port
from docbatch.schema.tables import TERMINAL_JOB_STATUSES
from tests.fixtures import ARTIFACTS, ROOT, WorkerProcess, new_api_key, spawn, stop_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The live api's schedule folder root; tenant ``default`` reads below <root>/default.
SCHEDULE_ROOT = Path(tempfile.mkdtemp(prefix="docbatch-ui-roots-"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="module")
def key() -> str:
    return new_api_key("default")


@pytest.fixture(scope="module")
def live(key: str) -> Iterator[str]:
    """A real api subprocess and a fake-handler worker on a private queue prefix."""
    prefix = f"ui{secrets.token_hex(3)}"
    env = {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": "tests.fakes:UpperHandler",
        "DOCBATCH_UNIT_MAX_DOCUMENTS": "3",
        "DOCBATCH_FAKE_SLEEP": "0.6",
        "DOCBATCH_SCHEDULE_FOLDER_ROOTS": f'["{SCHEDULE_ROOT}"]',
        # A second summarize deployment no worker serves (the job page says so).
        "DOCBATCH_DEPLOYMENTS": '[{"name": "sum-idle", "task": "summarize", '
        '"handler": "tests.fakes:UpperHandler"}]',
    }
    worker = WorkerProcess("summarize", env=env, name="ui")
    port = free_port()
    api = spawn(["api", "--port", str(port)], f"api-ui-{port}.log", env)
    auth = {"Authorization": f"Bearer {key}"}
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2, headers=auth).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if api.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((ARTIFACTS / f"api-ui-{port}.log").read_text()[-3000:])
        time.sleep(0.2)
    worker.wait_ready()
    yield url
    stop_process(api)
    worker.stop()
    shutil.rmtree(SCHEDULE_ROOT, ignore_errors=True)


def _chromium(url: str, *extra: str, size: str = "1400,900") -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: run ops/system-deps.sh (Debian package chromium)")
    with tempfile.TemporaryDirectory(prefix="docbatch-chromium-") as profile:
        out = subprocess.run(
            [CHROMIUM, *FLAGS, f"--window-size={size}", f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _wait_job(url: str, job_id: str, key: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=_auth(key)).json()
        if job["status"] in TERMINAL_JOB_STATUSES:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _text(dom: str, cls: str, row_attr: str) -> str:
    row = re.search(rf"<tr[^>]*{row_attr}[^>]*>(.*?)</tr>", dom, re.S)
    assert row, f"no row {row_attr} in the rendered page"
    cell = re.search(rf'class="num {cls}">([^<]*)<', row.group(1))
    assert cell, (cls, row.group(1)[:500])
    return cell.group(1)


def test_dashboard_shows_job_counts_chart_and_errors(live, key):
    docs = [
        {"custom_id": f"doc-{i:02d}", "text": f"line {i} of the test corpus"} for i in range(22)
    ]
    docs += [
        {"custom_id": "bad-1", "text": "POISON here"},
        {"custom_id": "bad-2", "text": "POISON"},
    ]
    resp = httpx.post(
        f"{live}/v1/jobs",
        json={"name": "dashboard demo", "tasks": ["summarize"], "documents": docs},
        headers=_auth(key),
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    job = _wait_job(live, job_id, key)
    assert job["status"] == "completed_with_errors"

    ARTIFACTS.mkdir(exist_ok=True)
    page = f"{live}/ui/jobs/{job_id}#key={key}"  # a sign-in link: the key stays client-side
    dom = _chromium(page, "--dump-dom")
    (ARTIFACTS / "dashboard-job.html").write_text(dom, encoding="utf-8")
    assert 'class="badge s-completed_with_errors" id="job-status"' in dom
    assert ">dashboard demo<" in dom
    assert _text(dom, "c-total", 'data-task="summarize"') == "24"
    assert _text(dom, "c-succeeded", 'data-task="summarize"') == "22"
    assert _text(dom, "c-failed", 'data-task="summarize"') == "2"
    assert _text(dom, "c-pending", 'data-task="summarize"') == "0"
    # JSON documents need no extraction: no extraction row, nothing waiting for it.
    assert _count_rows(dom) == ["summarize"]
    assert "extraction" not in dom
    assert "24 of 24 task results done (100.0%)" in dom
    # The progress chart: documents done over time as a line per task (its slope is the
    # rate), ending at the task's total, with the smoothed rate in the legend.
    svg = re.search(r'<svg[^>]*class="chart-svg".*?</svg>', dom, re.S)
    assert svg, "no chart"
    assert re.search(r'<path[^>]*stroke="#4f7cff"[^>]*data-task="summarize"', svg.group(0))
    assert re.search(r"summarize: 24 done, [0-9.]+ docs/s</title>", svg.group(0))
    assert re.search(r'data-task="summarize">summarize [0-9.]+ docs/s<', svg.group(0))
    errors = re.findall(r'<tr class="error-row"><td class="mono">([^<]+)</td>', dom)
    assert sorted(errors) == ["bad-1", "bad-2"]
    assert "poison chunk" in dom
    assert "Download results (NDJSON)" in dom
    first_error = httpx.get(
        f"{live}/v1/jobs/{job_id}/errors?limit=1", headers=_auth(key)
    ).text.splitlines()
    assert len(first_error) == 1 and "bad-" in first_error[0]
    _chromium(page, f"--screenshot={ARTIFACTS / 'dashboard.png'}", size="1400,1200")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

    # A second job still running while the list is rendered: its bar is live.
    running = httpx.post(
        f"{live}/v1/jobs",
        json={"name": "nightly import", "tasks": ["summarize"], "documents": docs[:21]},
        headers=_auth(key),
    ).json()["id"]
    listing = _chromium(f"{live}/ui#key={key}", "--dump-dom")
    assert re.search(rf'data-job-id="{running}">.*?aria-valuemax="21"', listing, re.S)
    row = re.search(rf'<tr class="job-row" data-job-id="{job_id}">(.*?)</tr>', listing, re.S)
    assert row, "the job is not listed"
    assert "24 / 24 done · 2 failed or cancelled" in row.group(1)
    assert 'aria-valuenow="24" aria-valuemax="24"' in row.group(1)
    _chromium(f"{live}/ui#key={key}", f"--screenshot={ARTIFACTS / 'dashboard-jobs.png'}")
    assert _wait_job(live, running, key)["status"] == "completed"


def test_job_page_and_cli_say_no_worker_serves_a_deployment(live, key, tmp_path):
    """A job submitted with the CLI on two summarize deployments, one (``--model
    sum-idle``) with no worker running: its units stay queued, and the CLI and the job page
    say which deployment has no worker and how to start one; the default, served, runs."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(f'{{"custom_id": "w-{i}", "text": "waiting line {i}"}}\n' for i in range(3))
    )
    said = (
        "no worker serves deployment sum-idle: its units stay queued until one starts "
        "(docbatch worker --deployment sum-idle)"
    )
    submitted = _cli(
        live, key, "submit", str(docs), "--task", "summarize", "--task", "summarize",
        "--model", "sum-idle",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert f"warning: {said}" in submitted.stderr.splitlines()
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{live}/v1/jobs/{job_id}", headers=_auth(key)).json())["counts"][
        "summarize"
    ]["succeeded"] < 3:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    try:
        assert job["tasks"]["sum-idle"]["model"] == "sum-idle"
        dom = _chromium(f"{live}/ui/jobs/{job_id}#key={key}", "--dump-dom")
        assert re.findall(r'<div class="warning">([^<]*)</div>', dom) == [said]
        assert _text(dom, "c-pending", 'data-task="sum-idle"') == "3"
        assert _text(dom, "c-succeeded", 'data-task="summarize"') == "3"
        status = _cli(live, key, "status", job_id)
        assert status.returncode == 0 and f"warning: {said}" in status.stderr
    finally:
        httpx.post(f"{live}/v1/jobs/{job_id}/cancel", headers=_auth(key))
    assert _wait_job(live, job_id, key)["status"] == "cancelled"


def _count_rows(dom: str) -> list[str]:
    """The tasks of the job page's counts table, top to bottom."""
    return re.findall(r'<tr class="count-row[^"]*" data-task="([^"]+)"', dom)


def test_dashboard_shows_extraction_first_with_documents_waiting(live, key):
    # No extract worker consumes this api's queues: the HTML file stays waiting for
    # extraction while the UTF-8 text file (read inline, no extraction) is summarized.
    resp = httpx.post(
        f"{live}/v1/jobs",
        data={"tasks": "summarize", "name": "files in"},
        files=[
            ("file", ("notes.txt", b"Plain notes, read inline without extraction.")),
            ("file", ("page.html", b"<html><body><p>A page to extract first.</p></body></html>")),
        ],
        headers=_auth(key),
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        job = httpx.get(f"{live}/v1/jobs/{job_id}", headers=_auth(key)).json()
        if job["counts"]["summarize"]["succeeded"] == 1:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["counts"]["extract"]["pending"] == 1

    ARTIFACTS.mkdir(exist_ok=True)
    page = f"{live}/ui/jobs/{job_id}#key={key}"
    dom = _chromium(page, "--dump-dom")
    (ARTIFACTS / "dashboard-job-files.html").write_text(dom, encoding="utf-8")
    _chromium(page, f"--screenshot={ARTIFACTS / 'dashboard-files.png'}", size="1400,1000")
    assert _count_rows(dom) == ["extract", "summarize"]
    row = re.search(r'<tr class="count-row stage-row" data-task="extract">(.*?)</tr>', dom, re.S)
    assert row, "no extraction row"
    assert "extraction (files → text)" in row.group(1)
    assert "1 document waiting for extraction" in row.group(1)
    assert _text(dom, "c-total", 'data-task="extract"') == "2"
    assert _text(dom, "c-succeeded", 'data-task="extract"') == "1"
    assert _text(dom, "c-pending", 'data-task="extract"') == "1"
    assert _text(dom, "c-pending", 'data-task="summarize"') == "1"
    assert re.search(r"task results done \([0-9.]+%\) · 1 document waiting for extraction", dom)

    listing = _chromium(f"{live}/ui#key={key}", "--dump-dom")
    row = re.search(rf'<tr class="job-row" data-job-id="{job_id}">(.*?)</tr>', listing, re.S)
    assert row, "the job is not listed"
    chips = re.findall(r'<span class="chip"[^>]*data-task="[^"]+">([^<]+)<', row.group(1))
    assert chips == ["extraction 1/2", "summarize 1/2"]
    assert "1 document waiting for extraction" in row.group(1)

    assert httpx.post(f"{live}/v1/jobs/{job_id}/cancel", headers=_auth(key)).status_code < 300
    assert _wait_job(live, job_id, key)["status"] in TERMINAL_JOB_STATUSES


def _cli(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbatch.cli", *args],
        cwd=ROOT,
        env={**os.environ, "DOCBATCH_API_URL": url, "DOCBATCH_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_schedules_cli_add_list_remove(live, key):
    name = f"cli-{secrets.token_hex(3)}"
    folder = SCHEDULE_ROOT / "default" / name
    folder.mkdir(parents=True)
    (folder / "a.md").write_text("# hello", encoding="utf-8")
    bad = _cli(
        live,
        key,
        "schedules",
        "add",
        name,
        "--cron",
        "99 * * * *",
        "--folder",
        str(folder),
        "--task",
        "summarize",
    )
    assert bad.returncode == 1 and "cron" in bad.stderr
    added = _cli(
        live,
        key,
        "schedules",
        "add",
        name,
        "--cron",
        "30 1 * * *",
        "--folder",
        str(folder),
        "--task",
        "summarize",
    )
    assert added.returncode == 0, added.stderr
    schedule_id = added.stdout.strip()
    assert schedule_id.startswith("sch_") and "next run" in added.stderr
    listed = _cli(live, key, "schedules", "list")
    assert listed.returncode == 0
    line = next(x for x in listed.stdout.splitlines() if x.startswith(schedule_id))
    assert name in line and "30 1 * * *" in line and str(folder) in line
    assert "summarize" in line and "never ran" in line
    html = _chromium(f"{live}/ui/schedules#key={key}", "--dump-dom")
    assert name in html and "30 1 * * *" in html
    removed = _cli(live, key, "schedules", "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert schedule_id not in _cli(live, key, "schedules", "list").stdout


def test_usage_page_and_cli_show_what_the_tenant_used(live, key):
    docs = [{"custom_id": f"u{i}", "text": f"usage page {i}"} for i in range(3)]
    resp = httpx.post(
        f"{live}/v1/jobs", json={"tasks": ["summarize"], "documents": docs}, headers=_auth(key)
    )
    assert resp.status_code == 202, resp.text
    assert _wait_job(live, resp.json()["id"], key)["status"] == "completed"
    printed = _cli(live, key, "usage", "--group-by", "task")
    assert printed.returncode == 0, printed.stderr
    line = next(x for x in printed.stdout.splitlines() if x.startswith("default  summarize"))
    assert int(line.split()[3].replace(",", "")) >= 3  # tenant, task, units, documents
    shell = httpx.get(f"{live}/ui/usage")
    assert shell.status_code == 200 and "usage-body" in shell.text and "/ui/usage" in shell.text


def test_usage_page_renders_the_tenants_rows(live, key):
    html = _chromium(f"{live}/ui/usage#key={key}", "--dump-dom")
    assert "summarize" in html and "No usage yet" not in html
