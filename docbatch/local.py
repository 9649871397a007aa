"""``docbatch run``: the whole system in one process group, with no servers.

The embedded default is SQLite for the database and kombu's filesystem transport
for the broker, in a work folder; one worker process per requested task is started
(the same ``docbatch worker`` the deployment runs), and this process submits the
job, shows progress, writes the results and stops the workers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docbatch.processes import Process, kill, spawn
from docbatch.progress import ProgressBar
from docbatch.schema.settings import TASKS

EXTRACT = "extract"  # docbatch.schema.tables.EXTRACT, without importing SQLAlchemy before the spawn

IDLE_EXIT_SECONDS = 1.0


@dataclass
class RunReport:
    job: dict[str, Any]
    output: Path
    seconds: float
    workdir: Path


def embedded_env(workdir: Path) -> dict[str, str]:
    return {
        "DOCBATCH_DATABASE_URL": f"sqlite:///{workdir / 'docbatch.db'}",
        "DOCBATCH_BROKER_URL": "filesystem://",
        "DOCBATCH_BROKER_FOLDER": str(workdir / "broker"),
    }


def start_worker(name: str, env: dict[str, str], log_path: Path) -> Process:
    """A worker of the extract stage, a task's default deployment or a named deployment."""
    option = "--task" if name == EXTRACT or name in TASKS else "--deployment"
    args = [sys.executable, "-m", "docbatch.cli", "worker", option, name]
    return spawn([*args, "--pool", "solo", "--loglevel", "WARNING"], log_path, env)


def stop_processes(procs: list[Process], timeout: float = 20.0) -> None:
    signal_stop(procs)
    reap(procs, timeout)


def signal_stop(procs: list[Process]) -> None:
    """Ask the workers to finish (Celery's warm shutdown); ``reap`` waits for them."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)


def reap(procs: list[Process], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill(p)


def run(
    inputs: list[Path],
    tasks: list[dict[str, Any]],
    output: Path,
    *,
    workdir: Path | None = None,
    poll: float = 0.25,
    progress: bool = True,
) -> RunReport:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="docbatch-run-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = embedded_env(workdir)
    # One worker per deployment (a task's default is named after the task).
    names = [(t.get("model") or t["type"]) if isinstance(t, dict) else t for t in tasks]
    from docbatch.inputs import expand, needs_extraction

    files = expand(inputs)  # a typo fails here, before any process starts
    # The extract stage (files to text, no model) joins when the inputs hold files.
    workers = [*names, EXTRACT] if needs_extraction(files) else list(names)
    # Workers share the cores: each takes its share (worker/threads.py), since
    # oversubscribed threads cost more than they give.
    env["DOCBATCH_WORKERS_PER_HOST"] = str(len(names))
    # ... and while some are idle, the busy ones take the idle ones' cores.
    env["DOCBATCH_CORE_SHARE_DIR"] = str(workdir / "cores")
    started = time.monotonic()
    # Workers start first, before this process's own imports: their start-up and model
    # load (seconds) overlap the imports, the migration and the ingest below. They touch
    # the database only once a unit reaches them, and units are published after both.
    procs = [start_worker(t, env, workdir / f"worker-{t}.log") for t in workers]
    try:
        from docbatch.domain import jobs
        from docbatch.domain.outbox import unit_of_work
        from docbatch.domain.results import iter_document_results
        from docbatch.inputs import iter_documents
        from docbatch.schema.db import new_session
        from docbatch.schema.migrate import upgrade
        from docbatch.schema.settings import Settings
        from docbatch.schema.tables import TERMINAL_JOB_STATUSES

        # The workers' settings, handed to every call below (this process's environment
        # is left as it was).
        settings = Settings(
            database_url=env["DOCBATCH_DATABASE_URL"],
            broker_url=env["DOCBATCH_BROKER_URL"],
            broker_folder=env["DOCBATCH_BROKER_FOLDER"],
            workers_per_host=len(names),
        )
    except BaseException:
        stop_processes(procs)
        raise
    stopping = False
    try:
        upgrade(settings.database_url)
        # The units are published (to the broker folder) once this commits; the workers
        # read them when they are up.
        with unit_of_work(settings) as s:
            parsed = jobs.parse_tasks(tasks, settings)
            new = jobs.create_job(
                s,
                settings,
                tenant="local",
                tasks=parsed,
                documents=iter_documents(files, settings.max_document_bytes),
                name="docbatch run",
            )
            job_id = new.job.id
            names = jobs.task_names(s, job_id)
        if EXTRACT in names and EXTRACT not in workers:  # a .txt that is not UTF-8
            workers.append(EXTRACT)
            procs.append(start_worker(EXTRACT, env, workdir / f"worker-{EXTRACT}.log"))
        bar = ProgressBar() if progress else None
        while True:
            with new_session(settings) as s:
                job = jobs.job_public(s, jobs.get_job(s, None, job_id)).model_dump(mode="json")
            if bar:
                bar.update(job)
            if job["status"] in TERMINAL_JOB_STATUSES:
                break
            dead = [t for t, p in zip(workers, procs, strict=True) if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"worker for {dead[0]} exited; see {workdir / f'worker-{dead[0]}.log'}"
                )
            time.sleep(poll)
        if bar:
            bar.close()
        # The workers shut down while the results are written.
        signal_stop(procs)
        stopping = True
        seconds = time.monotonic() - started
        if output.suffix.lower() == ".parquet":
            from docbatch.domain.export import write_parquet

            write_parquet(job_id, names, str(output), settings=settings)
        else:
            with output.open("w", encoding="utf-8") as fh:
                for line in iter_document_results(job_id, names, settings=settings):
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if stopping:
            # The job is over and its results written: the workers are idle, so a worker
            # still tearing down after a moment (Celery's warm shutdown takes seconds) is
            # killed rather than waited for.
            reap(procs, timeout=IDLE_EXIT_SECONDS)
        else:
            stop_processes(procs)
    return RunReport(job=job, output=output, seconds=seconds, workdir=workdir)
