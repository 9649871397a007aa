"""Driving a real docbatch deployment from the benchmark: api, workers, jobs, results."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.env import BenchEnv, rss_mb, stop, wait_until
from docbatch.processes import free_port
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import TERMINAL_JOB_STATUSES


class Api:
    """``docbatch api`` (uvicorn, one process) on a free port."""

    def __init__(
        self, env: BenchEnv, name: str = "api", extra: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = env.spawn(
            ["-m", "docbatch.cli", "api", "--port", str(self.port)], f"{name}.log", extra
        )
        self.client = httpx.Client(
            base_url=self.url, timeout=600, headers={"Authorization": f"Bearer {env.api_key}"}
        )
        wait_until(self._healthy, 60, "api /healthz")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("api exited at start")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def submit_ndjson(self, body: bytes | Iterable[bytes], tasks: str) -> dict[str, Any]:
        resp = self.client.post(
            "/v1/jobs",
            params={"tasks": tasks},
            content=body,
            headers={"content-type": "application/x-ndjson"},
        )
        if resp.status_code != 202:
            raise RuntimeError(f"submit failed: {resp.status_code} {resp.text[:500]}")
        return dict(resp.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}").json())

    def wait(self, job_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL_JOB_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}: {job['counts']}")
            time.sleep(0.1)

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        with self.client.stream("GET", f"/v1/jobs/{job_id}/results") as resp:
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)

    def stop(self) -> None:
        self.client.close()
        stop(self.proc)


def start_workers(
    env: BenchEnv, task: str, count: int, extra: dict[str, str], name: str
) -> list[Any]:
    procs = []
    for i in range(count):
        log = f"worker-{name}-{i}.log"
        proc = env.spawn(
            ["-m", "docbatch.cli", "worker", "--task", task, "--loglevel", "INFO"], log, extra
        )
        procs.append((proc, log))
    for proc, log in procs:

        def ready(proc: Any = proc, log: str = log) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{env.log(log)[-3000:]}")
            text = env.log(log)
            # " ready." is the consumer; the pool process loads the model after that.
            return " ready." in text and f"({task}) model" in text

        wait_until(ready, 180, f"worker {log} ready", interval=0.2)
    return [p for p, _ in procs]


def stop_all(procs: Iterable[Any]) -> None:
    for p in procs:
        stop(p)


def steady_window(job_id: str) -> tuple[float, int, int]:
    """Seconds from the first unit claim to the last unit done; chunks and tokens counted."""
    from sqlalchemy import func, select

    from docbatch.schema.db import new_session
    from docbatch.schema.tables import JobTask, Unit

    with new_session(get_settings()) as s:
        first, last = s.execute(
            select(func.min(Unit.claimed_at), func.max(Unit.finished_at)).where(
                Unit.job_id == job_id
            )
        ).one()
        chunks, tokens = s.execute(
            select(func.sum(JobTask.chunks), func.sum(JobTask.tokens)).where(
                JobTask.job_id == job_id
            )
        ).one()
    return (last - first).total_seconds(), int(chunks or 0), int(tokens or 0)


@dataclass
class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread."""

    pid: int
    interval: float = 0.05
    peak: float = 0.0
    start: float = 0.0

    def __enter__(self) -> RssSampler:
        self.start = rss_mb(self.pid)[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid)[0])
            except OSError:
                return
            self._stop.wait(self.interval)

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid)[0])


def ndjson_bytes(docs: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(size):
            yield block
