"""Data lifecycle, measured (``make bench`` figure ``lifecycle``; alone:
``python -m bench.lifecycle --docs 100000``).

delete:   a job of N documents (1% of them files, every document with a result) deleted
          through the api while another tenant submits small jobs: seconds from DELETE to
          404, rows and large objects before the job, with it and after (want: back to
          before), and the other tenant's small-job latency before and during the delete
          (want: unchanged within noise). The job is written by ``create_job`` and its
          results by SQL (the model's time is not what is measured here); the delete runs
          on a ``docbatch maintenance`` process, the small jobs on a no-op worker.
schedule: a folder of 1,000 files fired three nights running (``schedules.fire``, what
          the beat tick calls): large objects added by each run (want 0 after the first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text


def _settings() -> Any:
    """The environment's settings, read once bench.env has set it up (imported late)."""
    from docbatch.schema.settings import get_settings

    return get_settings()


TABLES = ("jobs", "job_tasks", "documents", "document_files", "units", "results", "originals")
Row = Callable[[str, float, str, bool | None, str], None]


def _counts() -> tuple[int, int]:
    """(rows in the lifecycle's tables, large objects)."""
    from docbatch.schema.db import new_session

    # The other tenant's small jobs (submitted during the measurement) are not counted.
    mine = {
        "jobs": "WHERE tenant <> 'bench-other'",
        "originals": "WHERE tenant <> 'bench-other'",
    }
    theirs = "WHERE job_id NOT IN (SELECT id FROM jobs WHERE tenant = 'bench-other')"
    with new_session(_settings()) as s:
        rows = sum(
            int(s.scalar(text(f"SELECT count(*) FROM {t} {mine.get(t, theirs)}")) or 0)
            for t in TABLES
        )
        los = int(s.scalar(text("SELECT count(*) FROM pg_largeobject_metadata")) or 0)
    return rows, los


def _big_job(docs: int) -> str:
    """A completed job of ``docs`` documents, 1% of them files, each with a result."""
    from docbatch.domain import jobs
    from docbatch.domain.files import FileDocument
    from docbatch.domain.outbox import unit_of_work
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings

    settings = get_settings()
    files = max(1, docs // 100)

    def documents() -> Any:
        for i in range(docs - files):
            yield {"custom_id": f"d{i}", "text": f"Document {i}: a sentence or two of text."}, None
        for i in range(files):
            data = f"<html><body><p>File {i} of the big job.</p></body></html>".encode()
            yield FileDocument(f"f{i}.html", len(data), lambda d=data: io.BytesIO(d)), None

    with unit_of_work(settings, publish=False) as s:
        job_id = jobs.create_job(
            s, settings, tenant="bench", tasks=[{"type": "summarize"}], documents=documents()
        ).job.id
    with transaction(_settings()) as s:  # results, as a worker writes them (extract results exist)
        s.execute(
            text(
                "INSERT INTO results (job_id, document_id, task, status, output, created_at,"
                " reused) SELECT job_id, id, 'summarize', 'succeeded',"
                ' \'{"summary": "A sentence."}\', now(), false FROM documents'
                " WHERE job_id = :j"
            ),
            {"j": job_id},
        )
        s.execute(text("UPDATE units SET state = 'done' WHERE job_id = :j"), {"j": job_id})
        s.execute(
            text(
                "UPDATE job_tasks SET succeeded = total, failed = 0, cancelled = 0"
                " WHERE job_id = :j"
            ),
            {"j": job_id},
        )
        s.execute(
            text(
                "UPDATE jobs SET status = 'completed', started_at = now(), finished_at = now()"
                " WHERE id = :j"
            ),
            {"j": job_id},
        )
    return job_id


def _small_job_seconds(api: Any) -> float:
    body = b"".join(
        f'{{"custom_id": "s{i}", "text": "A small job of the other tenant."}}\n'.encode()
        for i in range(5)
    )
    started = time.perf_counter()
    job = api.submit_ndjson(body, "summarize")
    api.wait(job["id"], timeout=300)
    return time.perf_counter() - started


def delete_figure(env: Any, row: Row, docs: int) -> None:
    from bench.cluster import Api, stop_all
    from bench.env import wait_until
    from docbatch.domain.tenants import create_key
    from docbatch.schema.db import transaction

    rows0, los0 = _counts()
    started = time.perf_counter()
    job_id = _big_job(docs)
    made = time.perf_counter() - started
    rows1, los1 = _counts()
    with transaction(_settings()) as s:
        other_key = create_key(s, "bench-other").key
    owner = Api(env, "api-lifecycle")
    other = Api(env, "api-lifecycle-other")
    other.client.headers["Authorization"] = f"Bearer {other_key}"
    noop = {"DOCBATCH_MODELS__SUMMARIZE__HANDLER": "bench.handlers:NoopHandler"}
    worker = env.spawn(
        ["-m", "docbatch.cli", "worker", "--task", "summarize", "--no-maintenance"],
        "worker-lifecycle.log",
        {**noop, "DOCBATCH_TORCH_THREADS": "1"},
    )
    maintenance = env.spawn(["-m", "docbatch.cli", "maintenance"], "maintenance.log")
    procs = [worker]
    for log in ("worker-lifecycle.log", "maintenance.log"):
        wait_until(lambda log=log: " ready." in env.log(log), 180, f"{log} ready")
    try:
        quiet = [_small_job_seconds(other) for _ in range(5)]
        t0 = time.perf_counter()
        resp = owner.client.delete(f"/v1/jobs/{job_id}")
        answered = time.perf_counter() - t0
        assert resp.status_code == 202, resp.text
        during: list[float] = []
        while owner.client.get(f"/v1/jobs/{job_id}").status_code == 200:
            during.append(_small_job_seconds(other))
            if time.perf_counter() - t0 > 1800:
                raise TimeoutError("the delete took over 30 minutes")
        wait_until(lambda: owner.client.get(f"/v1/jobs/{job_id}").status_code == 404, 1800, "404")
        deleted = time.perf_counter() - t0
    finally:
        stop_all([*procs, maintenance])
        owner.stop()
        other.stop()
    rows2, los2 = _counts()
    files = max(1, docs // 100)
    row(
        f"delete a {docs:,}-document job: seconds to deleted",
        deleted,
        "minutes, not hours",
        None,
        f"DELETE answered in {answered:.2f} s; rows {rows0:,} before the job, {rows1:,} "
        f"with it, {rows2:,} after; large objects {los0} / {los1} / {los2} ({files} files); "
        f"job written in {made:.0f} s; one `docbatch maintenance` process, "
        "DOCBATCH_DELETE_BATCH_ROWS=5000",
    )
    row(
        "delete: rows and large objects left after (want 0)",
        (rows2 - rows0) + (los2 - los0),
        "0",
        (rows2 - rows0) + (los2 - los0) == 0,
        f"rows {rows2 - rows0:+,}, large objects {los2 - los0:+}",
    )
    q, d = statistics.median(quiet), statistics.median(during) if during else float("nan")
    row(
        "delete: other tenant's 5-document job latency during the delete (s, median)",
        d,
        f"~{q:.2f} s (quiet)",
        None,
        f"quiet: median {q:.2f} s of {len(quiet)} jobs ({min(quiet):.2f}-{max(quiet):.2f}); "
        f"during the delete: median {d:.2f} s of {len(during)} jobs"
        + (f" ({min(during):.2f}-{max(during):.2f})" if during else ""),
    )


def schedule_figure(row: Row, files: int = 1000) -> None:
    from docbatch.domain.outbox import unit_of_work
    from docbatch.domain.schedules import create_schedule, fire, next_fire
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Schedule, utcnow

    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "bench" / "inbox"
        folder.mkdir(parents=True)
        for i in range(files):
            (folder / f"page-{i:04d}.html").write_bytes(
                f"<html><body><h1>Page {i}</h1><p>Unchanged, night after night.</p></body>"
                "</html>".encode()
            )
        settings = get_settings().model_copy(update={"schedule_folder_roots": [root]})
        with transaction(_settings()) as s:
            schedule_id = create_schedule(
                s,
                settings,
                "bench",
                {
                    "name": "lifecycle-bench",
                    "cron": "0 2 * * *",
                    "source": {"type": "folder", "path": str(folder)},
                    "tasks": ["summarize"],
                },
            ).id
        night = next_fire("0 2 * * *", utcnow())
        added, seconds = [], []
        for n in range(3):
            _, before = _counts()
            started = time.perf_counter()
            with unit_of_work(settings, publish=False) as s:
                schedule = s.get(Schedule, schedule_id)
                firing = fire(s, settings, schedule, night + dt.timedelta(days=n), "bench")
            assert firing is not None and firing.job is not None
            seconds.append(time.perf_counter() - started)
            added.append(_counts()[1] - before)
    row(
        f"schedule over an unchanged folder of {files:,} files: large objects added by runs 2-3",
        added[1] + added[2],
        "0",
        added[1] + added[2] == 0,
        f"large objects added per run: {added}; seconds per firing: "
        + ", ".join(f"{x:.1f}" for x in seconds),
    )


def run(env: Any, row: Row, docs: int, parts: tuple[str, ...] = ("schedule", "delete")) -> None:
    if "schedule" in parts:
        schedule_figure(row)
    if "delete" in parts:
        delete_figure(env, row, docs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--only", nargs="*", choices=["schedule", "delete"])
    args = p.parse_args()
    from bench.env import BenchEnv

    env = BenchEnv(Path(tempfile.mkdtemp(prefix="docbatch-bench-")) / "logs").open()

    def row(figure: str, value: float, target: str, met: bool | None, detail: str) -> None:
        print(f"== {figure}: {value:,.3f} (target {target}: {met})\n   {detail}", flush=True)

    try:
        run(env, row, args.docs, tuple(args.only or ("schedule", "delete")))
    finally:
        env.close()


if __name__ == "__main__":
    main()
