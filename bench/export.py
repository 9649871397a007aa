"""Export rate: ``GET /v1/jobs/{id}/results`` (NDJSON) of a finished job, docs/s.

The job is written straight into a fresh database (documents and succeeded results shaped
like the no-op handler's, by one SQL statement each), so the figure is the export alone,
not the run before it. ``--against DIR`` also starts the api from another checkout (e.g.
``/work/main``) on the same database and alternates the two, so the ratio is measured side
by side on the same machine load::

    python -m bench.export --docs 100000 --against /work/main --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.env import ROOT, BenchEnv, rss_mb, wait_until
from docbatch.processes import free_port
from docbatch.schema.settings import get_settings


def seed_job(n: int, tenant: str = "bench", analyze: bool = True, text_bytes: int = 4) -> str:
    """A completed ``embed`` job of ``n`` documents, written by SQL in a few seconds.

    ``analyze=False`` leaves the tables as a job that just ended leaves them (statistics
    not yet updated); ``text_bytes`` sizes each document's text (the ceiling job's are
    ~1 KB, which makes the documents heap that much wider)."""
    from sqlalchemy import text

    from docbatch.schema.db import transaction
    from docbatch.schema.tables import new_job_id

    job_id = new_job_id()
    with transaction(get_settings()) as s:
        s.execute(
            text(
                "INSERT INTO jobs (id, tenant, name, status, priority, document_count, "
                "created_at, reuse_results) VALUES (:id, :t, 'export-bench', 'completed', 0, :n, "
                "now(), false)"
            ),
            {"id": job_id, "t": tenant, "n": n},
        )
        s.execute(
            text(
                "INSERT INTO job_tasks (job_id, task, params, total, succeeded, failed, "
                "cancelled, tokens, chunks) VALUES (:id, 'embed', '{}', :n, :n, 0, 0, 0, 0)"
            ),
            {"id": job_id, "n": n},
        )
        s.execute(
            text(
                "INSERT INTO documents (job_id, seq, custom_id, text, metadata, content_hash) "
                "SELECT :id, g, 'gen-' || g, repeat('t', :w), NULL, md5(g::text) "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"id": job_id, "n": n, "w": text_bytes},
        )
        # The text json.dumps writes for the no-op handler's output and parameters.
        s.execute(
            text(
                "INSERT INTO results (job_id, document_id, task, status, output, model_id, "
                "model_revision, params, created_at, reused) "
                "SELECT d.job_id, d.id, 'embed', 'succeeded', "
                "CAST('{\"chunks\": ' || (1 + d.seq % 3) || '}' AS json), 'bench/noop', 'v1', "
                "CAST('{}' AS json), now(), false FROM documents d WHERE d.job_id = :id"
            ),
            {"id": job_id},
        )
    if analyze:
        with transaction(get_settings()) as s:
            s.execute(text("ANALYZE documents"))
            s.execute(text("ANALYZE results"))
    return job_id


class ApiFrom:
    """``uvicorn`` of the api from a checkout (its own code, the run's database)."""

    def __init__(self, env: BenchEnv, checkout: Path, name: str, extra_path: str = "") -> None:
        self.name = name
        self.port = free_port()
        # cwd decides which checkout ``-m`` imports (the cwd comes first on sys.path).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "docbatch.cli", "api", "--port", str(self.port)],
            cwd=checkout,
            env={
                **__import__("os").environ,
                "PYTHONPATH": os.pathsep.join(p for p in (str(checkout), extra_path) if p),
            },
            stdout=(env.logdir / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        env.procs.append(self.proc)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=600,
            headers={"Authorization": f"Bearer {env.api_key}"},
        )
        wait_until(self._healthy, 60, f"{name} /healthz")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited at start")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def export(self, job_id: str, parse: bool = True) -> tuple[int, float, float]:
        """(lines, seconds, RSS growth MB sampled while streaming)."""
        before = rss_mb(self.proc.pid)[0]
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], rss_mb(self.proc.pid)[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        n = 0
        t0 = time.monotonic()
        with self.client.stream("GET", f"/v1/jobs/{job_id}/results") as resp:
            resp.raise_for_status()
            if parse:  # what a client does (and what bench.run's export figure does)
                for line in resp.iter_lines():
                    if line:
                        json.loads(line)
                        n += 1
            else:
                for chunk in resp.iter_bytes():
                    n += chunk.count(b"\n")
        seconds = time.monotonic() - t0
        done.set()
        sampler.join()
        return n, seconds, peak[0] - before


def measure(
    env: BenchEnv,
    docs: int,
    against: Path | None,
    rounds: int,
    parse: bool = True,
    analyze: bool = True,
    text_bytes: int = 4,
) -> dict[str, Any]:
    job_id = seed_job(docs, analyze=analyze, text_bytes=text_bytes)
    apis = [ApiFrom(env, ROOT, "api-this")]
    if against is not None:
        apis.insert(0, ApiFrom(env, against, "api-against"))
    rates: dict[str, list[float]] = {a.name: [] for a in apis}
    growth: dict[str, float] = {a.name: 0.0 for a in apis}
    for a in apis:  # warm-up: connections, plans, imports
        a.client.get(f"/v1/jobs/{job_id}")
    for r in range(rounds):
        for a in apis if r % 2 == 0 else list(reversed(apis)):
            n, seconds, grew = a.export(job_id, parse)
            assert n == docs, (a.name, n)
            rates[a.name].append(n / seconds)
            growth[a.name] = max(growth[a.name], grew)
            print(
                f"  round {r + 1} {a.name:<12} {n} lines in {seconds:.2f}s = "
                f"{n / seconds:,.0f} docs/s, RSS +{grew:.1f} MB",
                flush=True,
            )
    out: dict[str, Any] = {
        "docs": docs,
        "analyzed": analyze,
        "text_bytes": text_bytes,
        "this_first_docs_per_s": rates["api-this"][0],
        "this_docs_per_s": statistics.median(rates["api-this"]),
        "this_rss_growth_mb": growth["api-this"],
    }
    if against is not None:
        out["against_docs_per_s"] = statistics.median(rates["api-against"])
        out["against_rss_growth_mb"] = growth["api-against"]
        out["ratio"] = out["this_docs_per_s"] / out["against_docs_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3, help="exports per api, alternating")
    p.add_argument("--against", type=Path, help="another checkout to compare (e.g. /work/main)")
    p.add_argument("--no-parse", action="store_true", help="count lines, do not json.loads them")
    p.add_argument(
        "--no-analyze", action="store_true", help="leave statistics as a job that just ended does"
    )
    p.add_argument("--text-bytes", type=int, default=4, help="bytes of text per document")
    args = p.parse_args(argv)
    env = BenchEnv(Path(tempfile.mkdtemp(prefix="docbatch-export-"))).open()
    try:
        out = measure(
            env,
            args.docs,
            args.against,
            args.rounds,
            not args.no_parse,
            analyze=not args.no_analyze,
            text_bytes=args.text_bytes,
        )
    finally:
        env.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
