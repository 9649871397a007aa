"""A million documents in one job, end to end, beside a 100,000-document job on the same stack.

Both jobs run the same path (the real api, two real Celery workers on the no-op handler, the
real reconciler pass timed on a thread) so every figure is printed side by side with its ratio:
what grows with the job shows as a ratio well past 1.

    .venv/bin/python -m bench.million [--docs 1000000] [--sample 100000] [--workers 2]

Per job: ingest (docs/s, api peak RSS), units created, first unit claimed after the submit
returned, steady chunks/s and the rate in the first and the last tenth of the units,
``GET /v1/jobs/{id}`` / ``GET /v1/jobs`` p50/p99 while it runs, the dashboard's job page
load (its HTML plus the two reads its script makes), Redis memory of the run's db index at
its peak, the reconciler's pass time, NDJSON and Parquet export (docs/s, api RSS growth),
Postgres bytes per document (documents, results, units, indexes included) before and after
``VACUUM``; CPU per submitted document (api, Postgres), per unit (workers, Postgres) and per
poll round (api), and Redis commands per unit (the inputs of docs/scaling.md; Postgres' and
Redis' are server-wide, so take them on a quiet machine); then a cancel mid-way of a second
big job (time to ``cancelled``, counts exact), and the delete of the big completed job
(seconds from ``DELETE`` to 404 with one ``docbatch maintenance`` process deleting, the
workers stopped; rows and bytes of the job's tables before and after, and after
``VACUUM``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.cluster import Api, RssSampler, file_chunks, start_workers, stop_all
from bench.env import BenchEnv, machine, rss_mb
from bench.load import _tree_cpu_seconds

TABLES = ("documents", "results", "units")
# What a job's delete removes (docbatch.domain.deletion.TABLES and the job row).
JOB_TABLES = (
    "webhook_deliveries",
    "results",
    "document_files",
    "documents",
    "units",
    "job_tasks",
    "jobs",
)
WORDS = (  # noqa: SIM905
    "the of and to in is that for it as with was on be by this are from or an which data "
    "model document batch worker queue result token chunk vector summary label python"
).split()


def short_corpus(path: Path, n: int) -> Path:
    """``n`` short documents (100..300 bytes of English-like words)."""
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(20, 55))]
            fh.write(json.dumps({"custom_id": f"m-{i}", "text": " ".join(words)}) + "\n")
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[int(q * (len(ordered) - 1))] if ordered else float("nan")


class Watch:
    """While a job runs: polls (job, list, dashboard page), Redis memory, reconciler passes."""

    def __init__(self, api: Api, env: BenchEnv, job_id: str) -> None:
        self.api, self.env, self.job_id = api, env, job_id
        self.poll: list[float] = []
        self.listing: list[float] = []
        self.page: list[float] = []
        self.reconcile: list[float] = []
        self.redis_peak = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self._polls, self._redis, self._reconciles)
        ]

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _timed(self, into: list[float], client: httpx.Client, *paths: str) -> None:
        t0 = time.perf_counter()
        for path in paths:
            assert client.get(path).status_code == 200, path
        into.append(time.perf_counter() - t0)

    def _polls(self) -> None:
        headers = {"Authorization": f"Bearer {self.env.api_key}"}
        with httpx.Client(base_url=self.api.url, headers=headers, timeout=60) as c:
            while not self._stop.wait(0.2):
                self._timed(self.poll, c, f"/v1/jobs/{self.job_id}")
                self._timed(self.listing, c, "/v1/jobs")
                self._timed(
                    self.page,
                    c,
                    f"/ui/jobs/{self.job_id}",
                    f"/v1/jobs/{self.job_id}",
                    f"/v1/jobs/{self.job_id}/throughput",
                )

    def _redis(self) -> None:
        import redis as redis_lib

        client = redis_lib.Redis.from_url(self.env.broker_url)
        while not self._stop.wait(1.0):
            used = sum(client.memory_usage(k) or 0 for k in client.scan_iter(count=1000))
            self.redis_peak = max(self.redis_peak, used)

    def _reconciles(self) -> None:
        from docbatch.schema.settings import Settings
        from docbatch.worker.reconcile import reconcile_once

        settings = Settings()
        while not self._stop.wait(2.0):
            t0 = time.perf_counter()
            reconcile_once(settings)
            self.reconcile.append(time.perf_counter() - t0)


def sql(env: BenchEnv, statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(env.database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def db_counters(env: BenchEnv) -> dict[str, int]:
    """This database's transactions and row writes so far (pg_stat_database)."""
    row = sql(
        env,
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
        "WHERE datname = current_database()",
    )[0]
    return dict(zip(("commits", "inserts", "updates", "deletes"), map(int, row), strict=True))


def postgres_cpu_seconds() -> float:
    """User + system CPU of every postgres server process on this machine (the capacity
    model's Postgres CPU per unit and per document; other databases' work counts too, so
    read it on a quiet machine)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.endswith("(postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def redis_commands(env: BenchEnv) -> int:
    """Commands the Redis server has run so far (server-wide: every db index)."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(env.broker_url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


class Cpu:
    """CPU seconds spent by the api, the workers and Postgres between two readings."""

    def __init__(self, api: Api, workers: list[Any]) -> None:
        self.api, self.workers = api, workers

    def read(self) -> dict[str, float]:
        return {
            "api": _tree_cpu_seconds(self.api.pid),
            "workers": sum(_tree_cpu_seconds(w.pid) for w in self.workers),
            "postgres": postgres_cpu_seconds(),
        }

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before[k] for k, v in self.read().items()}


def table_bytes(env: BenchEnv) -> int:
    return sum(sql(env, f"SELECT pg_total_relation_size('{t}')")[0][0] for t in TABLES)


def unit_rates(env: BenchEnv, job_id: str) -> dict[str, float]:
    """Documents/s over the whole job and in its first and last tenth of units (finish order)."""
    rows = sql(
        env,
        "SELECT u.claimed_at, u.finished_at, u.seq_hi - u.seq_lo + 1 FROM units u "
        "WHERE u.job_id = :j AND u.finished_at IS NOT NULL ORDER BY u.finished_at",
        j=job_id,
    )
    created = sql(env, "SELECT created_at FROM jobs WHERE id = :j", j=job_id)[0][0]
    first_claim = min(r[0] for r in rows)
    tenth = max(1, len(rows) // 10)

    def rate(part: list[Any]) -> float:
        start = part[0][1] if part is not rows else first_claim
        span = (part[-1][1] - start).total_seconds()
        return sum(r[2] for r in part) / span if span > 0 else float("nan")

    return {
        "units created": len(rows),
        "first unit claimed after submit (s)": (first_claim - created).total_seconds(),
        "processing docs/s (first claim to last unit)": rate(rows),
        "processing docs/s, first tenth of units": rate(rows[: tenth + 1]),
        "processing docs/s, last tenth of units": rate(rows[-tenth - 1 :]),
    }


def export(api: Api, job_id: str, n: int, fmt: str) -> dict[str, float]:
    before = rss_mb(api.pid)[0]
    with RssSampler(api.pid) as sampler:
        t0 = time.monotonic()
        if fmt == "ndjson":
            got = sum(1 for _ in api.results(job_id))
            assert got == n, got
        else:
            # The api writes the whole file before its first byte: wait as long as that takes.
            with api.client.stream(
                "GET",
                f"/v1/jobs/{job_id}/results",
                params={"format": "parquet"},
                timeout=httpx.Timeout(60, read=3600),
            ) as resp:
                assert resp.status_code == 200, resp.status_code
                size = sum(len(b) for b in resp.iter_bytes())
            assert size > 0
        seconds = time.monotonic() - t0
    return {"docs_per_s": n / seconds, "rss_growth_mb": sampler.peak - before}


def run_job(env: BenchEnv, api: Api, cpu: Cpu, path: Path, n: int) -> dict[str, Any]:
    bytes_before = table_bytes(env)
    counters_before = db_counters(env)
    cpu_before, redis_before = cpu.read(), redis_commands(env)
    with RssSampler(api.pid) as ingest_rss:
        t0 = time.monotonic()
        job = api.submit_ndjson(file_chunks(path), "embed")
        ingest_s = time.monotonic() - t0
    ingest_cpu = cpu.since(cpu_before)
    with Watch(api, env, job["id"]) as watch:
        done = api.wait(job["id"], timeout=7200)
    assert done["counts"]["embed"]["succeeded"] == n, done["counts"]
    time.sleep(2)  # pg_stat_database is flushed by backends about once a second
    writes = {k: v - counters_before[k] for k, v in db_counters(env).items()}
    # Processing = from the end of the upload to the job done; the watch's polls (5 a
    # second) are in the api's and Postgres' share, counted below per poll round.
    run_cpu = {k: v - ingest_cpu[k] for k, v in cpu.since(cpu_before).items()}
    redis_ops = redis_commands(env) - redis_before
    rates = unit_rates(env, job["id"])
    units = rates["units created"]
    polls = len(watch.poll)
    out: dict[str, Any] = {
        "job id": job["id"],
        "ingest docs/s": n / ingest_s,
        "ingest api peak RSS MB": ingest_rss.peak,
        # What the upload itself added: the api holds what earlier requests left (the
        # previous job's Parquet export, its allocator's pools) before this one starts.
        "ingest api RSS growth MB": ingest_rss.peak - ingest_rss.start,
        **rates,
        **{f"postgres {k} per unit (all processes)": v / units for k, v in writes.items()},
        **{f"postgres {k} per document": v / n for k, v in writes.items()},
        "GET job p50 ms": pct(watch.poll, 0.5),
        "GET job p99 ms": pct(watch.poll, 0.99),
        "GET jobs p50 ms": pct(watch.listing, 0.5),
        "GET jobs p99 ms": pct(watch.listing, 0.99),
        "dashboard job page p50 ms": pct(watch.page, 0.5),
        "redis peak KB": watch.redis_peak / 1024,
        "reconcile pass p50 ms": pct(watch.reconcile, 0.5),
        "reconcile pass max ms": pct(watch.reconcile, 1.0),
        "api CPU ms per 1,000 documents submitted": 1e6 * ingest_cpu["api"] / n,
        "postgres CPU ms per 1,000 documents submitted": 1e6 * ingest_cpu["postgres"] / n,
        "worker CPU ms per unit (no-op model, all workers)": 1000 * run_cpu["workers"] / units,
        "postgres CPU ms per unit while processing (incl. the polls)": (
            1000 * run_cpu["postgres"] / units
        ),
        "api CPU ms per poll round (job + list + dashboard page) while processing": (
            1000 * run_cpu["api"] / polls if polls else float("nan")
        ),
        "redis commands per unit (server-wide)": redis_ops / units,
    }
    for fmt in ("ndjson", "parquet"):
        for k, v in export(api, job["id"], n, fmt).items():
            out[f"export {fmt} {k}"] = v
    out["pg bytes/doc"] = (table_bytes(env) - bytes_before) / n
    sql(env, "VACUUM (ANALYZE) documents, results, units")
    out["pg bytes/doc after VACUUM"] = (table_bytes(env) - bytes_before) / n
    return out


def cancel_midway(env: BenchEnv, api: Api, path: Path, n: int) -> dict[str, float]:
    job = api.submit_ndjson(file_chunks(path), "embed")
    while api.job(job["id"])["counts"]["embed"]["succeeded"] < n // 3:
        time.sleep(0.2)
    t0 = time.monotonic()
    resp = api.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 200, resp.text
    done = api.wait(job["id"], timeout=3600)
    seconds = time.monotonic() - t0
    counts = done["counts"]["embed"]
    assert done["status"] == "cancelled", done["status"]
    assert counts["succeeded"] + counts["cancelled"] + counts.get("failed", 0) == n, counts
    return {
        "cancel: seconds to cancelled": seconds,
        "cancel: succeeded": counts["succeeded"],
        "cancel: cancelled": counts["cancelled"],
    }


def job_rows(env: BenchEnv) -> int:
    return sum(int(sql(env, f"SELECT count(*) FROM {t}")[0][0]) for t in JOB_TABLES)


def job_bytes(env: BenchEnv) -> int:
    return sum(int(sql(env, f"SELECT pg_total_relation_size('{t}')")[0][0]) for t in JOB_TABLES)


def delete_job(env: BenchEnv, api: Api, job_id: str, n: int) -> dict[str, float]:
    """DELETE the (completed) job and time it to 404, one ``docbatch maintenance`` process
    deleting (as bench.lifecycle): the workers are stopped first, so only it runs the
    batches."""
    from bench.env import wait_until

    rows0, bytes0 = job_rows(env), job_bytes(env)
    maintenance = env.spawn(["-m", "docbatch.cli", "maintenance"], "maintenance-million.log")
    try:
        wait_until(lambda: " ready." in env.log("maintenance-million.log"), 180, "maintenance")
        t0 = time.monotonic()
        resp = api.client.delete(f"/v1/jobs/{job_id}")
        answered = time.monotonic() - t0
        assert resp.status_code == 202, resp.text
        wait_until(
            lambda: api.client.get(f"/v1/jobs/{job_id}").status_code == 404,
            7200,
            "the deleted job's 404",
            interval=0.5,
        )
        seconds = time.monotonic() - t0
    finally:
        stop_all([maintenance])
    rows1, bytes1 = job_rows(env), job_bytes(env)
    sql(env, "VACUUM (ANALYZE) " + ", ".join(JOB_TABLES))
    bytes2 = job_bytes(env)
    return {
        f"delete ({n:,} docs): seconds from DELETE to 404": seconds,
        "delete: seconds to answer DELETE": answered,
        "delete: documents deleted per s": n / seconds,
        "delete: job-table rows before": rows0,
        "delete: job-table rows after": rows1,
        "delete: job-table MB before": bytes0 / 1e6,
        "delete: job-table MB after": bytes1 / 1e6,
        "delete: job-table MB after VACUUM": bytes2 / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--unit-tokens", type=int, default=65536)
    p.add_argument("--no-cancel", action="store_true", help="skip the cancel of a second job")
    p.add_argument(
        "--no-delete", action="store_true", help="skip the delete of the big completed job"
    )
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="docbatch-million-"))
    env = BenchEnv(tmp / "logs").open()
    extra = {
        "DOCBATCH_TORCH_THREADS": "1",
        "DOCBATCH_MODELS__EMBED__HANDLER": "bench.handlers:NoopHandler",
    }
    api = Api(env, "api-million", {"DOCBATCH_UNIT_TOKENS": str(args.unit_tokens)})
    workers = start_workers(env, "embed", args.workers, extra, "noop")
    cpu = Cpu(api, workers)
    try:
        figures: dict[int, dict[str, Any]] = {}
        for n in (args.sample, args.docs):
            path = short_corpus(tmp / f"docs-{n}.jsonl", n)
            print(f"job of {n} documents ({path.stat().st_size / 1e6:.0f} MB NDJSON)", flush=True)
            figures[n] = run_job(env, api, cpu, path, n)
            for key, value in figures[n].items():
                shown = value if isinstance(value, str) else f"{value:,.2f}"
                print(f"  {key}: {shown}", flush=True)
        small, big = figures[args.sample], figures[args.docs]
        print(f"\n| figure | {args.sample:,} docs | {args.docs:,} docs | ratio |")
        print("|---|---:|---:|---:|")
        job_ids = {n: f.pop("job id") for n, f in figures.items()}
        for key in small:
            ratio = big[key] / small[key] if small[key] else float("nan")
            print(f"| {key} | {small[key]:,.2f} | {big[key]:,.2f} | {ratio:.2f} |")
        if not args.no_cancel:
            for key, value in cancel_midway(
                env, api, tmp / f"docs-{args.docs}.jsonl", args.docs
            ).items():
                print(f"| {key} | | {value:,.2f} | |", flush=True)
        if not args.no_delete:
            stop_all(workers)  # idle by now; only the maintenance process deletes
            for key, value in delete_job(env, api, job_ids[args.docs], args.docs).items():
                print(f"| {key} | | {value:,.2f} | |", flush=True)
        print(
            f"\n{args.workers} no-op workers, DOCBATCH_UNIT_TOKENS={args.unit_tokens}; "
            f"machine: {json.dumps(machine())}"
        )
        return 0
    finally:
        stop_all(workers)
        api.stop()
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
