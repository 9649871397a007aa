"""Flower against the test Redis, a real worker and a real job; a screenshot of its UI.

Flower runs as docker-compose.yml runs it (``celery --broker=URL flower``, no app
import, basic auth, read-only, bounded ``max_tasks``). It learns everything from task
events, so this also proves the worker sends task events and the producer sent-events.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Unit
from tests.conftest import RUN_ID, servers
from tests.fixtures import ARTIFACTS, WorkerProcess, load_corpus, wait_for_job
from tests.procs import FlowerProcess
from tests.settings_env import override

AUTH = ("ops", "flower-test-secret")
FAKE = "tests.fakes:UpperHandler"


def _poll(fetch: Any, ok: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if ok(value):
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not seen after {timeout}s; last: {value}")


def screenshot(url: str, path: Any, tmp_path: Any) -> None:
    """Headless Chromium screenshot of ``url`` (Debian's chromium, ops/system-deps.sh)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make system-deps installs it as root)")
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={path}",
            "--window-size=1400,900",
            "--virtual-time-budget=5000",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert path.exists() and path.stat().st_size > 10_000, f"no screenshot of {url} at {path}"


@pytest.fixture
def flower_queues() -> Iterator[dict[str, str]]:
    """Queues no session worker consumes: jobs created in this test go to them."""
    with override(queue_prefix=f"flower{RUN_ID}") as env:
        yield env


def test_flower_sees_the_worker_and_its_tasks(api, flower_queues, tmp_path):
    flower = FlowerProcess(
        servers().broker_url, basic_auth=":".join(AUTH), extra=["--read_only"]
    ).wait_ready()
    worker = WorkerProcess(
        "summarize",
        env={**flower_queues, "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE},
        name="flower",
    ).wait_ready()
    try:
        docs = load_corpus("stdlib-docs.jsonl", 40)
        resp = api.post(
            "/v1/jobs",
            json={"tasks": [{"type": "summarize"}], "documents": docs},
            headers={"Idempotency-Key": f"flower-{RUN_ID}"},
        )
        assert resp.status_code == 202, resp.text
        job = wait_for_job(api, resp.json()["id"], timeout=180)
        assert job["status"] == "completed", job
        with new_session(get_settings()) as s:
            units = s.query(Unit).filter(Unit.job_id == job["id"]).count()
        assert units >= 1

        # Authentication is on: the API refuses a request without credentials.
        assert httpx.get(f"{flower.url}/api/workers", timeout=10).status_code == 401

        # The worker is online (Flower pings it over the broker).
        ours_prefix = f"summarize-{worker.proc.pid}@"
        status = _poll(
            lambda: httpx.get(
                f"{flower.url}/api/workers", params={"status": "true"}, auth=AUTH, timeout=15
            ).json(),
            # Ours by name: the session's own summarize worker may be online too.
            lambda s: any(n.startswith(ours_prefix) and up for n, up in s.items()),
            what="summarize worker online in Flower",
        )
        name = next(n for n, up in status.items() if n.startswith(ours_prefix) and up)

        # Every unit of the job shows as a succeeded docbatch.process_unit task of that
        # worker, from its task events (received, started, succeeded).
        def ours() -> list[dict[str, Any]]:
            tasks = httpx.get(
                f"{flower.url}/api/tasks",
                params={"workername": name, "taskname": "docbatch.process_unit"},
                auth=AUTH,
                timeout=15,
            ).json()
            return [t for t in tasks.values() if t.get("state") == "SUCCESS"]

        succeeded = _poll(ours, lambda t: len(t) >= units, what=f"{units} succeeded tasks")
        assert len(succeeded) == units
        assert all(t["name"] == "docbatch.process_unit" for t in succeeded)
        # A worker runs units claimed ahead in the same task; their own messages then find
        # the unit closed and report "skipped".
        assert all(t["result"] in ("'done'", "'skipped'") for t in succeeded)
        assert any(t["result"] == "'done'" for t in succeeded)
        # Producer sent-events: Flower saw each task when it was published, not just run.
        assert all(t.get("sent") for t in succeeded), succeeded[0]

        # Read-only: control operations are refused.
        shutdown = httpx.post(f"{flower.url}/api/worker/shutdown/{name}", auth=AUTH, timeout=15)
        assert shutdown.status_code == 403, shutdown.text
        assert worker.proc.poll() is None

        page = httpx.get(f"{flower.url}/workers", auth=AUTH, timeout=15)
        assert page.status_code == 200 and name in page.text
        screenshot(
            f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{flower.port}/tasks",
            ARTIFACTS / "flower.png",
            tmp_path,
        )
    finally:
        worker.stop()
        flower.stop()
