"""Shared fixtures: real worker processes, the api, corpus loading, waiting for jobs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docbatch import processes
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import TERMINAL_JOB_STATUSES

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples"  # real text shipped with the repository (examples/README.md)
ARTIFACTS = ROOT / "test-artifacts"
_processes: list[subprocess.Popen[bytes]] = []


def stop_all_processes() -> None:
    for proc in _processes:
        stop_process(proc, timeout=10)
    _processes.clear()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    processes.stop(proc, timeout)


def spawn(
    args: list[str], log_name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``docbatch ARGS`` in its own process group, logging to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    cli = [sys.executable, "-m", "docbatch.cli", *args]
    proc = processes.spawn(cli, ARTIFACTS / log_name, env, cwd=ROOT)
    _processes.append(proc)
    return proc


class WorkerProcess:
    """A real ``docbatch worker --task T`` (prefork, concurrency 1) started for a test;
    ``deployment=True``: ``--deployment T`` (a named deployment)."""

    def __init__(
        self,
        task: str,
        env: dict[str, str] | None = None,
        pool: str = "prefork",
        name: str | None = None,
        deployment: bool = False,
    ) -> None:
        self.task = task
        self.log_name = f"worker-{name or task}-{time.monotonic_ns()}.log"
        option = "--deployment" if deployment else "--task"
        self.proc = spawn(
            ["worker", option, task, "--pool", pool, "--loglevel", "INFO"], self.log_name, env
        )

    @property
    def log(self) -> str:
        return (ARTIFACTS / self.log_name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.task} exited:\n{self.log[-3000:]}")
            if " ready." in self.log:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.task} not ready after {timeout}s:\n{self.log[-3000:]}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children)."""
        processes.kill(self.proc)


@pytest.fixture(scope="session")
def workers() -> Iterator[dict[str, WorkerProcess]]:
    """Session workers for the real MiniLM handlers: tags, summarize and embed."""
    started = {t: WorkerProcess(t) for t in ("tags", "summarize", "embed")}
    for w in started.values():
        w.wait_ready()
    yield started
    for w in started.values():
        w.stop()


def new_api_key(tenant: str) -> str:
    """Create a real API key for ``tenant`` in the run's database."""
    from docbatch.domain.tenants import create_key
    from docbatch.schema.db import transaction

    with transaction(get_settings()) as s:
        return create_key(s, tenant).key


@pytest.fixture(scope="session")
def api_key(database: str) -> str:
    """The default test tenant's key (tenant ``default``)."""
    return new_api_key("default")


@pytest.fixture(scope="session")
def app_instance() -> Any:
    from docbatch.api.app import create_app

    return create_app()


@pytest.fixture(scope="session")
def api(app_instance: Any, api_key: str) -> Iterator[TestClient]:
    """The real app in-process, authenticated as tenant ``default``."""
    with TestClient(app_instance, headers={"Authorization": f"Bearer {api_key}"}) as client:
        yield client


@pytest.fixture(scope="session")
def other_api(app_instance: Any, database: str) -> Iterator[TestClient]:
    """The same app authenticated as a second tenant, ``other``."""
    key = new_api_key("other")
    with TestClient(app_instance, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


@pytest.fixture(scope="session")
def anon_api(app_instance: Any) -> Iterator[TestClient]:
    """The app with no credentials."""
    with TestClient(app_instance) as client:
        yield client


def load_corpus(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in (CORPUS / name).open(encoding="utf-8")]
    return docs[:limit] if limit else docs


def wait_for_job(
    client: TestClient, job_id: str, timeout: float = 300, until: set[str] | None = None
) -> dict[str, Any]:
    until = until or set(TERMINAL_JOB_STATUSES)
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.3)


def read_ndjson(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]
