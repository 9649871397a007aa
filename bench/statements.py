"""The statements a running job repeats, timed on a small and a ten times bigger job.

``bench.million`` measures a whole million-document job end to end (half an hour);
this times, in a minute, the reads that run over and over while a job runs, on jobs
written straight to Postgres (units and usage rows, no documents), so that what grows
with the job shows as a ratio well past 1 in one run:

- the reconciler's pass (``docbatch.domain.reconcile.find_lost``: lost units, the
  queues with backlog, cancels to send again);
- the dispatcher's pick of the next unit (``docbatch.domain.fairshare.pick``, rolled
  back so every call sees the same backlog);
- the dashboard's throughput chart (``docbatch.domain.stats.throughput``);
- the poll (``docbatch.domain.polling.poll_job``);
- what every unit close asks (``ledger.finalize_job_if_done``, rolled back), every submit
  under a quota (``quotas.usage_of``) and every metrics scrape (``docbatch_queued_units``:
  ``tallies.queued_by_queue``); ``--counted`` times them as they were before the unit
  tallies (counting the units: ``tallies.kept`` false), beside the tallies.

Each job has two fifths of its units done (with their usage rows), two sent and the
rest in the backlog. First the small job alone, then the small job done and the big one
running beside it::

    .venv/bin/python -m bench.statements [--units 800] [--factor 10] [--runs 30] [--counted]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.env import BenchEnv, machine

DOCS_PER_UNIT = 256
QUEUE_TASK = "embed"


def make_job(units: int) -> str:
    """A running job of ``units`` units: 40 % done with usage rows, 2 sent, the rest
    backlog."""
    from sqlalchemy import text

    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Job, JobTask, utcnow

    settings = get_settings()
    queue = settings.queue_for(QUEUE_TASK)
    done = units * 2 // 5
    with transaction(settings) as s:
        job = Job(
            tenant="bench",
            status="running",
            document_count=units * DOCS_PER_UNIT,
            started_at=utcnow(),
        )
        s.add(job)
        s.flush()
        s.add(
            JobTask(
                job_id=job.id,
                task=QUEUE_TASK,
                params={},
                total=units * DOCS_PER_UNIT,
                succeeded=done * DOCS_PER_UNIT,
            )
        )
        s.flush()
        params = {"job": job.id, "queue": queue, "units": units, "done": done}
        s.execute(
            text(
                "INSERT INTO units (job_id, task, queue, seq_lo, seq_hi, est_tokens, state, "
                "attempts, published_at, dispatched_at, claimed_at, finished_at) "
                "SELECT :job, 'embed', :queue, i * 256, i * 256 + 255, 8000, "
                "CASE WHEN i < :done THEN 'done' ELSE 'queued' END, "
                "CASE WHEN i < :done THEN 1 ELSE 0 END, now(), "
                "CASE WHEN i < :done + 2 THEN now() END, "
                "CASE WHEN i < :done THEN now() END, "
                "CASE WHEN i < :done THEN now() - (:done - i) * interval '100 ms' END "
                "FROM generate_series(0, :units - 1) AS i"
            ),
            params,
        )
        s.execute(
            text(
                "INSERT INTO usage (unit_id, tenant, job_id, task, queue, model, state, "
                "documents, reused_documents, input_tokens, generated_tokens, chunks, "
                "model_seconds, extract_files, extract_pages, finished_at) "
                "SELECT id, 'bench', job_id, task, queue, 'noop', 'done', 256, 0, 8000, 0, "
                "256, 0.1, 0, 0, finished_at FROM units WHERE job_id = :job AND state = 'done'"
            ),
            params,
        )
    with transaction(settings) as s:
        s.execute(text("ANALYZE units"))
        s.execute(text("ANALYZE usage"))
    return str(job.id)


def finish(job_id: str) -> None:
    from sqlalchemy import text

    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings

    with transaction(get_settings()) as s:
        s.execute(
            text(
                "UPDATE units SET state = 'done', finished_at = now(), dispatched_at = now() "
                "WHERE job_id = :job AND state <> 'done'"
            ),
            {"job": job_id},
        )
        s.execute(
            text("UPDATE jobs SET status = 'completed', finished_at = now() WHERE id = :job"),
            {"job": job_id},
        )


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median, max) milliseconds of ``fn`` over ``runs`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), max(times)


def statements(job_id: str, runs: int, counted: bool = False) -> dict[str, float]:
    from docbatch.domain import fairshare, ledger, polling, quotas, stats, tallies
    from docbatch.domain.outbox import unit_of_work
    from docbatch.domain.reconcile import find_lost
    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import utcnow

    settings = get_settings()
    queue = settings.queue_for(QUEUE_TASK)

    def reconcile() -> None:
        with unit_of_work(settings, publish=False) as s:
            find_lost(s, settings, lambda queues: dict.fromkeys(queues, 2))

    def pick() -> None:
        with new_session(settings) as s:
            fairshare.lock_queue(s, queue)
            assert fairshare.pick(s, queue, 1, settings, utcnow())
            s.rollback()

    def chart() -> None:
        with new_session(settings) as s:
            assert stats.throughput(s, job_id)

    def poll() -> None:
        polling.poll_job(None, job_id, settings)

    def done() -> None:
        with new_session(settings) as s:
            assert not ledger.finalize_job_if_done(s, ledger.lock_job(s, job_id))
            s.rollback()

    def quota() -> None:
        with new_session(settings) as s:
            assert quotas.usage_of(s, "bench").queued_documents > 0

    def metric() -> None:
        with new_session(settings) as s:
            assert tallies.queued_by_queue(s)[queue] > 0

    reads = (("job done? (every unit close)", done), ("tenant quota use", quota))
    reads += (("queued units metric", metric),)
    out: dict[str, float] = {}
    for name, fn in (
        ("reconciler pass", reconcile),
        ("fair pick of the next unit", pick),
        ("throughput chart", chart),
        ("GET job (poll_job)", poll),
        *reads,
    ):
        median, worst = timed(fn, runs)
        out[f"{name} p50 ms"] = median
        out[f"{name} max ms"] = worst
    if counted:
        kept = tallies.kept
        tallies.kept = lambda session: False  # type: ignore[assignment]
        try:
            for name, fn in reads:
                median, worst = timed(fn, runs)
                out[f"{name}, counting units p50 ms"] = median
                out[f"{name}, counting units max ms"] = worst
        finally:
            tallies.kept = kept  # type: ignore[assignment]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--units", type=int, default=800, help="units of the small job")
    p.add_argument("--factor", type=int, default=10, help="the big job is this many times bigger")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument(
        "--counted", action="store_true", help="also the reads as before the unit tallies"
    )
    args = p.parse_args(argv)
    env = BenchEnv(Path(tempfile.mkdtemp(prefix="docbatch-statements-")) / "logs").open()
    try:
        small_units, big_units = args.units, args.units * args.factor
        small = make_job(small_units)
        figures_small = statements(small, args.runs, args.counted)
        finish(small)
        big = make_job(big_units)
        figures_big = statements(big, args.runs, args.counted)
        a, b = small_units * DOCS_PER_UNIT, big_units * DOCS_PER_UNIT
        head = f"{small_units:,} units ({a:,} docs) | {big_units:,} units ({b:,} docs)"
        print(f"| statement | {head} | ratio |")
        print("|---|---:|---:|---:|")
        for key, value in figures_small.items():
            other = figures_big[key]
            print(f"| {key} | {value:,.2f} | {other:,.2f} | {other / value:.2f} |")
        print(f"\nmachine: {json.dumps(machine())}")
        return 0
    finally:
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
